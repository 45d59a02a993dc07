-- The free credits of the period starting at p_start: the first period's amount in the first
-- period (the calendar month, UTC, of the account's first period), the later amount in every
-- later one (the policy row operators edit gives both). Each argument is used once, so that the
-- planner inlines the function even when p_start is an expression (the refill passes
-- billing_period_start(...)); one used twice would be evaluated by a call per row.
CREATE OR REPLACE FUNCTION billing_free_credits(
    p_first timestamptz, p_start timestamptz, p_first_credits bigint, p_later_credits bigint
) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN date_trunc('month', p_start AT TIME ZONE 'UTC') <= date_trunc('month', p_first AT TIME ZONE 'UTC')
                THEN p_first_credits ELSE p_later_credits END
$$;
