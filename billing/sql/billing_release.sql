-- Release the hold with public id p_hold: lock and settle its account, give all its credits back
-- (billing_hold_return), marked 'released', and record the key with the answer (body:
-- billing_hold_json). A pending hold that had lapsed is released by the settling itself, as
-- 'expired': that counts as made.
-- Outcomes: made; not_found; not_pending; expired (it had lapsed and was released before);
-- with the hold's status as found under the lock.
CREATE OR REPLACE FUNCTION billing_release(
    p_hold varchar, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_scope varchar, p_key varchar, p_request_hash varchar,
    OUT outcome text, OUT status varchar, OUT body json
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    h billing_hold;
    balance bigint;
    on_hold bigint;
    was varchar;
BEGIN
    IF billing_key_recorded(p_scope, p_key) THEN
        outcome := 'replay';
        RETURN;
    END IF;
    SELECT * INTO h FROM billing_hold WHERE public_id = p_hold;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    acct := billing_lock(h.account_id, p_now, p_actor_type, p_actor_id);
    was := h.status;
    SELECT * INTO h FROM billing_hold WHERE id = h.id;  -- as it is under the lock
    status := h.status;
    IF h.status = 'expired' AND NOT (was = 'pending' AND h.settled_at = p_now) THEN
        outcome := 'expired';
        RETURN;
    ELSIF h.status NOT IN ('pending', 'expired') THEN
        outcome := 'not_pending';
        RETURN;
    ELSIF h.status = 'pending' THEN
        SELECT r.balance, r.on_hold INTO balance, on_hold
        FROM billing_hold_return(h, 0, 'released', p_now, p_actor_type, p_actor_id, acct.available_credits,
                                 acct.held_credits) r;
        UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;
        SELECT * INTO h FROM billing_hold WHERE id = h.id;
    END IF;
    body := billing_hold_json(h, acct.public_id);
    PERFORM billing_key_record(p_scope, p_key, p_request_hash, p_now, 200, body);
    outcome := 'made';
END
$$;
