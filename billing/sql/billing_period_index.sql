-- Which period of the account the one starting at p_start is: 0 for the first (the calendar
-- month, UTC, of p_first), then one more per month.
CREATE OR REPLACE FUNCTION billing_period_index(p_first timestamptz, p_start timestamptz) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((date_part('year', p_start AT TIME ZONE 'UTC') - date_part('year', p_first AT TIME ZONE 'UTC')) * 12
            + date_part('month', p_start AT TIME ZONE 'UTC') - date_part('month', p_first AT TIME ZONE 'UTC'))::integer
$$;
