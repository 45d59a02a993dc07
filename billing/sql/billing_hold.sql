-- A hold: reserve p_credits (or, when NULL, the active operation's price) of the account with
-- public id p_account until p_expires_at, as billing_debit spends them, moving them to held
-- credits; records the key with the answer (body: billing_hold_json).
-- Outcomes as billing_debit's.
CREATE OR REPLACE FUNCTION billing_hold(
    p_account varchar, p_credits bigint, p_operation varchar, p_reference varchar, p_expires_at timestamptz,
    p_public_id varchar, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_scope varchar, p_key varchar, p_request_hash varchar, p_per_minute integer, p_burst integer,
    p_daily_cap bigint,
    OUT outcome text, OUT credits bigint, OUT available bigint, OUT held bigint, OUT body json,
    OUT retry_after integer, OUT rate_limit integer, OUT rate_remaining integer, OUT rate_reset integer
)
LANGUAGE plpgsql AS $$
DECLARE
    start record;
    acct accounts_account;
    made billing_hold;
BEGIN
    start := billing_spend_start(p_account, p_credits, p_operation, p_now, p_actor_type, p_actor_id,
                                 p_per_minute, p_burst, p_daily_cap);
    outcome := start.outcome;
    credits := start.credits;
    acct := start.acct;
    available := acct.available_credits;
    held := acct.held_credits;
    retry_after := start.retry_after;
    rate_limit := start.rate_limit;
    rate_remaining := start.rate_remaining;
    rate_reset := start.rate_reset;
    IF outcome <> 'made' THEN
        RETURN;
    END IF;
    INSERT INTO billing_hold
        (public_id, account_id, credits, captured_credits, status, operation, reference, actor_type, actor_id,
         created_at, expires_at)
    VALUES (p_public_id, acct.id, credits, 0, 'pending', p_operation, p_reference, p_actor_type, p_actor_id,
            p_now, p_expires_at)
    RETURNING * INTO made;
    PERFORM billing_take('hold', ARRAY[acct.id], ARRAY[credits], ARRAY[made.id], ARRAY[NULL::bigint],
                         ARRAY[p_reference], ARRAY[available], ARRAY[held], p_now, p_actor_type, p_actor_id);
    available := available - credits;
    held := held + credits;
    UPDATE accounts_account
    SET available_credits = available, held_credits = held, rate_tokens = acct.rate_tokens,
        rate_checked_at = acct.rate_checked_at, day_spent = acct.day_spent, day_started = acct.day_started
    WHERE id = acct.id;
    body := billing_hold_json(made, acct.public_id);
    PERFORM billing_key_record(p_scope, p_key, p_request_hash, p_now, 201, body);
END
$$;
