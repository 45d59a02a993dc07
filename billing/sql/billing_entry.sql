-- Append one ledger entry: the signed change of a lot (credits) or of held credits (held), and
-- the account's balances after it.
CREATE OR REPLACE FUNCTION billing_entry(
    p_account bigint, p_kind varchar, p_credits bigint, p_held bigint, p_balance bigint, p_on_hold bigint,
    p_grant bigint, p_hold bigint, p_debit bigint,
    p_actor_type varchar, p_actor_id varchar, p_reference varchar, p_now timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id, debit_id,
         actor_type, actor_id, reference, created_at)
    VALUES (p_account, p_kind, p_credits, p_held, p_balance, p_on_hold, p_grant, p_hold, p_debit,
            p_actor_type, p_actor_id, p_reference, p_now);
END
$$;
