-- The spend order: an account's unexpired lots with credits left, each with its place in the
-- order credits are taken from them: earliest expiry first (never-expiring last), then lower
-- priority, then the older lot (made first); `upto` is the credits of this lot and of every lot
-- before it. The window's order is the spendable index's (grant_spendable_idx: account,
-- expires_at, priority, id, where spendable), so the lots come from the index already sorted.
-- Inlined by the planner.
CREATE OR REPLACE FUNCTION billing_spendable_lots(p_account bigint, p_at timestamptz)
RETURNS TABLE (id bigint, source varchar, remaining bigint, expires_at timestamptz, place bigint, upto numeric)
LANGUAGE sql STABLE AS $$
    SELECT g.id, g.source, g.remaining, g.expires_at, row_number() OVER w, sum(g.remaining) OVER w
    FROM billing_grant g
    WHERE g.account_id = p_account AND g.spendable AND NOT billing_expired(g.expires_at, p_at)
    WINDOW w AS (ORDER BY g.expires_at, g.priority, g.id)
$$;
