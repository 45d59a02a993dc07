-- Bring a locked account up to date with the clock p_now, in this order: release its pending
-- holds past their expiry, make the free grant it is owed, expire its lapsed lots
-- (billing_expire_lots). Writes the cached balances when they changed, and returns the account
-- as it is after.
-- Each check is cheap when there is nothing to do: held credits guard the hold lookup, the free
-- grant is decided on the account row alone, and lapsed lots come from the spendable index.
CREATE OR REPLACE FUNCTION billing_settle(
    p_account accounts_account, p_now timestamptz, p_actor_type varchar, p_actor_id varchar
) RETURNS accounts_account
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account := p_account;
    balance bigint := p_account.available_credits;
    on_hold bigint := p_account.held_credits;
    h billing_hold;
BEGIN
    IF on_hold > 0 THEN
        FOR h IN
            SELECT * FROM billing_hold
            WHERE account_id = acct.id AND status = 'pending' AND billing_expired(expires_at, p_now)
            ORDER BY id
        LOOP
            SELECT r.balance, r.on_hold INTO balance, on_hold
            FROM billing_hold_return(h, 0, 'expired', p_now, p_actor_type, p_actor_id, balance, on_hold) r;
        END LOOP;
    END IF;
    IF billing_free_due(acct.status, acct.free_period_start, acct.first_period_start, acct.period_anchor_day, p_now)
    THEN
        SELECT f.balance, f.on_hold INTO balance, on_hold
        FROM billing_grant_free(acct, p_now, p_actor_type, p_actor_id, balance, on_hold) f;
        acct.free_period_start := billing_period_start(acct.first_period_start, acct.period_anchor_day, p_now);
    END IF;
    IF balance <> acct.available_credits OR on_hold <> acct.held_credits THEN
        UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;
        acct.available_credits := balance;
        acct.held_credits := on_hold;
    END IF;
    IF EXISTS (SELECT 1 FROM billing_grant g
               WHERE g.account_id = acct.id AND g.spendable AND billing_expired(g.expires_at, p_now)) THEN
        acct.available_credits := acct.available_credits
            - (billing_expire_lots(ARRAY[acct.id], p_now, p_actor_type, p_actor_id)).credits;
    END IF;
    RETURN acct;
END
$$;
