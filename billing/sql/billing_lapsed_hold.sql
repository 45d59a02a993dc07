-- Whether the account has a pending hold past its expiry that nothing has released yet: the
-- balance read then settles the account first. PL/pgSQL, not an EXISTS in the read's statement:
-- a function call costs nothing until it is made (only for accounts with held credits), where a
-- subquery's plan node is set up on every read, and PL/pgSQL keeps its query's plan.
CREATE OR REPLACE FUNCTION billing_lapsed_hold(p_account bigint, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM billing_hold h
                   WHERE h.account_id = p_account AND h.status = 'pending' AND billing_expired(h.expires_at, p_at));
END
$$;
