-- Settle a locked account before it spends (billing_settle), and answer it with its spend of the
-- day as it is after: a lapsed hold that the settling released gave its credits back to the day
-- in the table (billing_hold_return), which billing_settle's copy of the row does not show. For
-- billing_spend_start and the batch, before billing_spend_quota counts on the copy.
CREATE OR REPLACE FUNCTION billing_spend_settle(
    p_account accounts_account, p_now timestamptz, p_actor_type varchar, p_actor_id varchar
) RETURNS accounts_account
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account := billing_settle(p_account, p_now, p_actor_type, p_actor_id);
BEGIN
    IF acct.held_credits < p_account.held_credits THEN  -- only a lapsed hold lowers held credits here
        SELECT a.day_spent INTO acct.day_spent FROM accounts_account a WHERE a.id = acct.id;
    END IF;
    RETURN acct;
END
$$;
