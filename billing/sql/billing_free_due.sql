-- Whether an account is owed the free grant of the period in force at p_at: it is active (a
-- suspended account gets none) and the latest period it was granted (p_granted) is older.
CREATE OR REPLACE FUNCTION billing_free_due(
    p_status varchar, p_granted timestamptz, p_first timestamptz, p_anchor integer, p_at timestamptz
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_status = 'active'
           AND (p_granted IS NULL OR p_granted < billing_period_start(p_first, p_anchor, p_at))
$$;
