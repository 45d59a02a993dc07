-- The first step of every movement: take the account's row lock (the one lock per account, always
-- taken first, so movements neither deadlock nor overdraw), then settle what has lapsed. Returns
-- the account as it is after; NULL when there is no such account.
CREATE OR REPLACE FUNCTION billing_lock(
    p_account bigint, p_now timestamptz, p_actor_type varchar, p_actor_id varchar
) RETURNS accounts_account
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
BEGIN
    SELECT * INTO acct FROM accounts_account WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN billing_settle(acct, p_now, p_actor_type, p_actor_id);
END
$$;
