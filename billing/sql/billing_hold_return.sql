-- Settle a hold of a locked account: charge p_captured of its credits (a `capture` entry, when
-- p_status is 'captured'), charging its lots in the order they were held, and give the rest
-- back to the lots it came from (a `release` entry each, then billing_give_back: what goes back
-- to a lapsed or voided lot is gone at once, to a purchase that owes credits pays that first).
-- Marks the hold p_status. balance and on_hold are the account's balances, before and after.
-- What is not captured goes back to the account's spend of the day (billing_spend_quota), when
-- the hold was made that UTC day.
CREATE OR REPLACE FUNCTION billing_hold_return(
    p_hold billing_hold, p_captured bigint, p_status varchar, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar, INOUT balance bigint, INOUT on_hold bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    lot record;
    still bigint := p_captured;
    charged bigint;
    rest bigint;
BEGIN
    IF p_status = 'captured' THEN
        on_hold := on_hold - p_captured;
        PERFORM billing_entry(p_hold.account_id, 'capture', 0, -p_captured, balance, on_hold, NULL, p_hold.id, NULL,
                              p_actor_type, p_actor_id, p_hold.reference, p_now);
    END IF;
    FOR lot IN
        SELECT e.grant_id, -e.credits AS held, g.source, g.expires_at, g.voided_at IS NOT NULL AS voided
        FROM billing_ledgerentry e JOIN billing_grant g ON g.id = e.grant_id
        WHERE e.hold_id = p_hold.id AND e.kind = 'hold'
        ORDER BY e.id
    LOOP
        charged := least(lot.held, still);
        still := still - charged;
        rest := lot.held - charged;
        CONTINUE WHEN rest <= 0;
        balance := balance + rest;
        on_hold := on_hold - rest;
        PERFORM billing_entry(p_hold.account_id, 'release', rest, -rest, balance, on_hold, lot.grant_id, p_hold.id,
                              NULL, p_actor_type, p_actor_id, p_hold.reference, p_now);
        balance := billing_give_back(p_hold.account_id, lot.grant_id, lot.source, lot.expires_at, lot.voided, rest,
                                     on_hold, p_now, p_actor_type, p_actor_id, p_hold.reference, balance);
    END LOOP;
    IF p_hold.credits > p_captured THEN
        UPDATE accounts_account SET day_spent = greatest(day_spent - (p_hold.credits - p_captured), 0)
        WHERE id = p_hold.account_id AND day_started = (p_hold.created_at AT TIME ZONE 'UTC')::date
          AND day_started = (p_now AT TIME ZONE 'UTC')::date;
    END IF;
    UPDATE billing_hold SET status = p_status, captured_credits = p_captured, settled_at = p_now
    WHERE id = p_hold.id;
END
$$;
