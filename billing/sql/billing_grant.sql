-- Grant a lot of p_credits to the account with id p_account (a purchase, an adjustment or a
-- promotion; free grants are billing_grant_free's): lock and settle the account, add the lot
-- (priority by source unless given) and its `grant` entry; a lot that arrives already lapsed
-- expires at once. Returns the new lot's id, NULL when there is no such account.
CREATE OR REPLACE FUNCTION billing_grant(
    p_account bigint, p_source varchar, p_credits bigint, p_expires_at timestamptz, p_priority integer,
    p_reason text, p_reference varchar, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    OUT grant_id bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    balance bigint;
    lapsed boolean := billing_expired(p_expires_at, p_now);
BEGIN
    acct := billing_lock(p_account, p_now, p_actor_type, p_actor_id);
    IF acct.id IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO billing_grant (account_id, source, amount, remaining, expires_at, priority, reason, created_at)
    VALUES (acct.id, p_source, p_credits, CASE WHEN lapsed THEN 0 ELSE p_credits END, p_expires_at,
            coalesce(p_priority, billing_priority(p_source)), p_reason, p_now)
    RETURNING id INTO grant_id;
    balance := acct.available_credits + p_credits;
    PERFORM billing_entry(acct.id, 'grant', p_credits, 0, balance, acct.held_credits, grant_id, NULL, NULL,
                          p_actor_type, p_actor_id, p_reference, p_now);
    IF lapsed THEN
        balance := balance - p_credits;
        PERFORM billing_entry(acct.id, 'expire', -p_credits, 0, balance, acct.held_credits, grant_id, NULL, NULL,
                              p_actor_type, p_actor_id, p_reference, p_now);
    END IF;
    UPDATE accounts_account SET available_credits = balance WHERE id = acct.id;
END
$$;
