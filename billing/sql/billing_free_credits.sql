-- The free credits of the period starting at p_start: the first period's amount in the first
-- period, the later amount in every later one (the policy row operators edit gives both).
CREATE OR REPLACE FUNCTION billing_free_credits(
    p_first timestamptz, p_start timestamptz, p_first_credits bigint, p_later_credits bigint
) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN billing_period_index(p_first, p_start) <= 0 THEN p_first_credits ELSE p_later_credits END
$$;
