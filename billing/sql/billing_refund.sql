-- Refund the debit with id p_debit, once: lock and settle its account, give each lot back what
-- the debit took from it (a `refund` entry each, then billing_give_back: what goes back to a
-- lapsed or voided lot is gone at once, to a purchase that owes credits pays that first), and
-- record the key with the answer (body: billing_debit_json).
-- Outcomes: made; replay; not_found; already_refunded.
CREATE OR REPLACE FUNCTION billing_refund(
    p_debit varchar, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_scope varchar, p_key varchar, p_request_hash varchar,
    OUT outcome text, OUT body json
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    d billing_debit;
    lot record;
    balance bigint;
BEGIN
    IF billing_key_recorded(p_scope, p_key) THEN
        outcome := 'replay';
        RETURN;
    END IF;
    SELECT * INTO d FROM billing_debit WHERE public_id = p_debit;
    IF NOT FOUND THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    acct := billing_lock(d.account_id, p_now, p_actor_type, p_actor_id);
    -- Compare-and-set under the lock: only one refund ever sets refunded_at.
    UPDATE billing_debit SET refunded_at = p_now WHERE id = d.id AND refunded_at IS NULL RETURNING * INTO d;
    IF NOT FOUND THEN
        outcome := 'already_refunded';
        RETURN;
    END IF;
    balance := acct.available_credits;
    FOR lot IN
        SELECT e.grant_id, -e.credits AS taken, g.source, g.expires_at, g.voided_at IS NOT NULL AS voided
        FROM billing_ledgerentry e JOIN billing_grant g ON g.id = e.grant_id
        WHERE e.debit_id = d.id AND e.kind = 'debit'
        ORDER BY e.id
    LOOP
        balance := balance + lot.taken;
        PERFORM billing_entry(acct.id, 'refund', lot.taken, 0, balance, acct.held_credits, lot.grant_id, NULL, d.id,
                              p_actor_type, p_actor_id, d.reference, p_now);
        balance := billing_give_back(acct.id, lot.grant_id, lot.source, lot.expires_at, lot.voided, lot.taken,
                                     acct.held_credits, p_now, p_actor_type, p_actor_id, d.reference, balance);
    END LOOP;
    UPDATE accounts_account SET available_credits = balance WHERE id = acct.id;
    body := billing_debit_json(d, acct.public_id, balance, acct.held_credits);
    PERFORM billing_key_record(p_scope, p_key, p_request_hash, p_now, 200, body);
    outcome := 'made';
END
$$;
