-- The start of a debit or a hold: the credits (p_credits, or when NULL the active operation's
-- price), the replay check, then the account locked and settled (billing_lock), and the
-- outcome so far: 'made' when the spend may go ahead (billing_spend_outcome), else why not.
CREATE OR REPLACE FUNCTION billing_spend_start(
    p_account varchar, p_credits bigint, p_operation varchar, p_scope varchar, p_key varchar,
    p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    OUT outcome text, OUT credits bigint, OUT acct accounts_account
)
LANGUAGE plpgsql AS $$
BEGIN
    credits := coalesce(p_credits, billing_operation_price(p_operation));
    IF credits IS NULL THEN
        outcome := 'unknown_operation';
    ELSIF billing_key_recorded(p_scope, p_key) THEN
        outcome := 'replay';
    ELSE
        acct := billing_lock((SELECT a.id FROM accounts_account a WHERE a.public_id = p_account), p_now,
                             p_actor_type, p_actor_id);
        outcome := billing_spend_outcome(acct, credits);
    END IF;
END
$$;
