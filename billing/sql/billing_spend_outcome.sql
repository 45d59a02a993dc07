-- Whether a locked, settled account may spend p_credits: 'made' when it may, else the refusal
-- ('not_found' for no account, 'suspended', 'insufficient'). The one rule for debits, holds and
-- batch items.
CREATE OR REPLACE FUNCTION billing_spend_outcome(p_account accounts_account, p_credits bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_account.id IS NULL THEN 'not_found'
                WHEN p_account.status <> 'active' THEN 'suspended'
                WHEN p_account.available_credits < p_credits THEN 'insufficient'
                ELSE 'made' END
$$;
