-- The free-credit period in force at p_at for an account anchored on day p_anchor (1-28) whose
-- first period started at p_first: periods start at the anchor day's midnight (UTC) every month,
-- the latest one at or before p_at being the anchor day of the month p_at falls in once moved
-- back by (anchor day - 1) days; in a month before the first period's (a clock moved back) it is
-- the first period. Inlined by the planner.
CREATE OR REPLACE FUNCTION billing_period_start(p_first timestamptz, p_anchor integer, p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN date_trunc('month', (p_at AT TIME ZONE 'UTC') - (p_anchor - 1) * interval '1 day')
                     < date_trunc('month', p_first AT TIME ZONE 'UTC')
                THEN p_first
                ELSE (date_trunc('month', (p_at AT TIME ZONE 'UTC') - (p_anchor - 1) * interval '1 day')
                      + (p_anchor - 1) * interval '1 day') AT TIME ZONE 'UTC'
           END
$$;
