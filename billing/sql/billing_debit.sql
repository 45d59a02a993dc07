-- A debit: p_credits (or, when NULL, the active operation's price) from the account with public
-- id p_account, in one transaction: lock and settle the account, refuse or take the credits in
-- spend order, write the debit, the entries and the cached balances, and record the key with
-- the answer (body: billing_debit_json). A key recorded before fails the key's insert (a unique
-- violation), which rolls the whole call back: the caller replays the recorded answer.
-- Outcomes: made; unknown_operation, not_found, suspended, insufficient (credits, available and
-- held say what there was), daily_cap_reached, rate_limited (retry_after: seconds until it could
-- be made); nothing but the settling is written unless made. p_per_minute, p_burst, p_daily_cap:
-- the quota settings (billing_spend_quota); rate_limit, rate_remaining, rate_reset: the account's
-- token bucket after the call, for the RateLimit-* headers (NULL while its rate limit is off).
CREATE OR REPLACE FUNCTION billing_debit(
    p_account varchar, p_credits bigint, p_operation varchar, p_reference varchar, p_metadata jsonb,
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
    made billing_debit;
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
    INSERT INTO billing_debit
        (public_id, account_id, credits, operation, reference, metadata, actor_type, actor_id, created_at)
    VALUES (p_public_id, acct.id, credits, p_operation, p_reference, coalesce(p_metadata, '{}'::jsonb),
            p_actor_type, p_actor_id, p_now)
    RETURNING * INTO made;
    PERFORM billing_take('debit', ARRAY[acct.id], ARRAY[credits], ARRAY[NULL::bigint], ARRAY[made.id],
                         ARRAY[p_reference], ARRAY[available], ARRAY[held], p_now, p_actor_type, p_actor_id);
    available := available - credits;
    UPDATE accounts_account
    SET available_credits = available, held_credits = held, rate_tokens = acct.rate_tokens,
        rate_checked_at = acct.rate_checked_at, day_spent = acct.day_spent, day_started = acct.day_started
    WHERE id = acct.id;
    body := billing_debit_json(made, acct.public_id, available, held);
    PERFORM billing_key_record(p_scope, p_key, p_request_hash, p_now, 201, body);
END
$$;
