-- The lazy refill: the free grant of the period in force at p_now, for a locked account that is
-- owed it (billing_free_due). Records the period on the account whatever the amount; the refill
-- job makes the same grants set-based, and the unique (account, period_start) backs both up.
CREATE OR REPLACE FUNCTION billing_grant_free(
    p_account accounts_account, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    INOUT balance bigint, INOUT on_hold bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    start timestamptz := billing_period_start(p_account.first_period_start, p_account.period_anchor_day, p_now);
    policy billing_billingpolicy;
    credits bigint;
    made bigint;
BEGIN
    SELECT * INTO STRICT policy FROM billing_billingpolicy WHERE id = 1;
    credits := billing_free_credits(p_account.first_period_start, start, policy.free_credits_first_period,
                                    policy.free_credits_per_period);
    UPDATE accounts_account SET free_period_start = start WHERE id = p_account.id;
    IF credits <= 0 THEN
        RETURN;
    END IF;
    INSERT INTO billing_grant
        (account_id, source, amount, remaining, expires_at, priority, period_start, reason, created_at)
    VALUES (p_account.id, 'free_monthly', credits, credits, billing_period_end(start), billing_priority('free_monthly'),
            start, 'free credits, period ' || billing_period_index(p_account.first_period_start, start), p_now)
    RETURNING id INTO made;
    balance := balance + credits;
    PERFORM billing_entry(p_account.id, 'grant', credits, 0, balance, on_hold, made, NULL, NULL,
                          p_actor_type, p_actor_id, '', p_now);
END
$$;
