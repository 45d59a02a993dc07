-- The start of a debit or a hold: the credits (p_credits, or when NULL the active operation's
-- price), then the account locked and settled (billing_spend_settle; found by its public id in
-- the same statement), and the outcome so far: 'made' when the spend may go ahead
-- (billing_spend_outcome, then the quotas of billing_spend_quota with the settings' limits
-- p_per_minute, p_burst and p_daily_cap), else why not. When made, acct counts the spend in its
-- quota columns, which the caller writes with the balances; retry_after and rate_* as
-- billing_spend_quota answers them. No replay check: the key's insert at the end of the
-- movement fails when the key was recorded, and the caller replays what was recorded.
CREATE OR REPLACE FUNCTION billing_spend_start(
    p_account varchar, p_credits bigint, p_operation varchar, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar, p_per_minute integer, p_burst integer, p_daily_cap bigint,
    OUT outcome text, OUT credits bigint, OUT acct accounts_account,
    OUT retry_after integer, OUT rate_limit integer, OUT rate_remaining integer, OUT rate_reset integer
)
LANGUAGE plpgsql AS $$
DECLARE
    quota record;
BEGIN
    credits := coalesce(p_credits, billing_operation_price(p_operation));
    IF credits IS NULL THEN
        outcome := 'unknown_operation';
        RETURN;
    END IF;
    SELECT * INTO acct FROM accounts_account a WHERE a.public_id = p_account FOR UPDATE;
    IF FOUND THEN
        acct := billing_spend_settle(acct, p_now, p_actor_type, p_actor_id);
    END IF;
    outcome := billing_spend_outcome(acct, credits);
    IF outcome = 'made' THEN
        quota := billing_spend_quota(acct, credits, p_now, p_per_minute, p_burst, p_daily_cap);
        outcome := quota.outcome;
        acct := quota.acct;
        retry_after := quota.retry_after;
        rate_limit := quota.rate_limit;
        rate_remaining := quota.rate_remaining;
        rate_reset := quota.rate_reset;
    END IF;
END
$$;
