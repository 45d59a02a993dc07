-- Capture p_credits (all when NULL) of the hold with public id p_hold: lock and settle its
-- account, charge the credits and give the rest back (billing_hold_return), and record the key
-- with the answer, the hold as the API shows it (body: billing_hold_json).
-- Outcomes: made; replay; not_found; invalid_amount (body: {"held": the hold's credits}; nothing
-- written); not_pending (body: {"status": ...}); lapsed (the hold had lapsed: this call's
-- settling released it, and that release is kept); expired (it was released so before).
CREATE OR REPLACE FUNCTION billing_capture(
    p_hold varchar, p_credits bigint, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_scope varchar, p_key varchar, p_request_hash varchar,
    OUT outcome text, OUT body json
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    h billing_hold;
    amount bigint;
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
    amount := coalesce(p_credits, h.credits);
    IF amount < 0 OR amount > h.credits THEN  -- a hold's credits never change: checked before the lock
        outcome := 'invalid_amount';
        body := json_build_object('held', h.credits);
        RETURN;
    END IF;
    acct := billing_lock(h.account_id, p_now, p_actor_type, p_actor_id);
    was := h.status;
    SELECT * INTO h FROM billing_hold WHERE id = h.id;  -- as it is under the lock
    IF h.status = 'expired' THEN
        outcome := CASE WHEN was = 'pending' AND h.settled_at = p_now THEN 'lapsed' ELSE 'expired' END;
        RETURN;
    ELSIF h.status <> 'pending' THEN
        outcome := 'not_pending';
        body := json_build_object('status', h.status);
        RETURN;
    END IF;
    SELECT r.balance, r.on_hold INTO balance, on_hold
    FROM billing_hold_return(h, amount, 'captured', p_now, p_actor_type, p_actor_id, acct.available_credits,
                             acct.held_credits) r;
    UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;
    SELECT * INTO h FROM billing_hold WHERE id = h.id;
    body := billing_hold_json(h, acct.public_id);
    PERFORM billing_key_record(p_scope, p_key, p_request_hash, p_now, 200, body);
    outcome := 'made';
END
$$;
