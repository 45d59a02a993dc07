-- The start of a debit or a hold: the credits (p_credits, or when NULL the active operation's
-- price), then the account locked and settled (as billing_lock does, found by its public id in
-- the same statement), and the outcome so far: 'made' when the spend may go ahead
-- (billing_spend_outcome), else why not. No replay check: the key's insert at the end of the
-- movement fails when the key was recorded, and the caller replays what was recorded.
CREATE OR REPLACE FUNCTION billing_spend_start(
    p_account varchar, p_credits bigint, p_operation varchar, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar,
    OUT outcome text, OUT credits bigint, OUT acct accounts_account
)
LANGUAGE plpgsql AS $$
BEGIN
    credits := coalesce(p_credits, billing_operation_price(p_operation));
    IF credits IS NULL THEN
        outcome := 'unknown_operation';
        RETURN;
    END IF;
    SELECT * INTO acct FROM accounts_account a WHERE a.public_id = p_account FOR UPDATE;
    IF FOUND THEN
        acct := billing_settle(acct, p_now, p_actor_type, p_actor_id);
    END IF;
    outcome := billing_spend_outcome(acct, credits);
END
$$;
