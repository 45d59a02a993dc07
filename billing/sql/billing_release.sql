-- Release the hold with public id p_hold: lock and settle its account, give all its credits back
-- (billing_hold_return), marked 'released'. A pending hold that had lapsed is released by the
-- settling itself, as 'expired': that counts as made.
-- Outcomes: made; not_found; not_pending; expired (it had lapsed and was released before);
-- with the hold's status as found under the lock.
CREATE OR REPLACE FUNCTION billing_release(
    p_hold varchar, p_now timestamptz, p_actor_type varchar, p_actor_id varchar, OUT outcome text, OUT status varchar
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    h billing_hold;
    balance bigint;
    on_hold bigint;
    was varchar;
BEGIN
    SELECT * INTO h FROM billing_hold WHERE public_id = p_hold;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    acct := billing_lock(h.account_id, p_now, p_actor_type, p_actor_id);
    was := h.status;
    SELECT * INTO h FROM billing_hold WHERE id = h.id;  -- as it is under the lock
    status := h.status;
    IF h.status = 'expired' THEN
        outcome := CASE WHEN was = 'pending' AND h.settled_at = p_now THEN 'made' ELSE 'expired' END;
        RETURN;
    ELSIF h.status <> 'pending' THEN
        outcome := 'not_pending';
        RETURN;
    END IF;
    SELECT r.balance, r.on_hold INTO balance, on_hold
    FROM billing_hold_return(h, 0, 'released', p_now, p_actor_type, p_actor_id, acct.available_credits,
                             acct.held_credits) r;
    UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;
    outcome := 'made';
END
$$;
