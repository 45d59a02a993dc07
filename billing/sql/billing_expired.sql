-- The expiry rule, for lots and holds alike: lapsed from the exact instant of expires_at on;
-- NULL never lapses. A one-expression SQL function: the planner inlines it, so a condition
-- written with it still uses the indexes on expires_at.
CREATE OR REPLACE FUNCTION billing_expired(p_expires_at timestamptz, p_at timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_expires_at IS NOT NULL AND p_expires_at <= p_at
$$;
