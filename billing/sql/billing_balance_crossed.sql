-- The balance trigger's function (AFTER UPDATE OF available_credits ON accounts_account, made by
-- notifications/balance_trigger.py). Its WHEN clause calls it only when the update crosses a
-- threshold kept on the row itself, so a movement that crosses none costs no query:
--   - the low-balance threshold (low_balance_threshold_credits) against the state last announced
--     (balance_low): raises balance.low, or balance.recovered once back at or above it, and
--     records the state announced on the row;
--   - the auto-recharge threshold (auto_recharge_threshold_credits; 0 when off), crossed
--     downwards: the compare-and-set of the account's auto-recharge state (idle -> queued) lets
--     one recharge through per crossing, however many spends race (they queue on the row lock).
-- Events go to the outbox (notifications_event) in the movement's own transaction; a Celery
-- sweep delivers them after commit. Their time is the business time of the movement: that of
-- the account's latest ledger entry, which every engine function writes before the balance.
-- AFTER, not BEFORE: a BEFORE row trigger makes PostgreSQL lock the row before every update of
-- the balance, whatever WHEN says (a WAL record per account in the refill); recording the state
-- announced takes an update of its own, but only on a crossing.
-- A trigger depends on this function: a migration that reloads it drops the trigger first.
CREATE OR REPLACE FUNCTION billing_balance_crossed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    low boolean := NEW.available_credits < NEW.low_balance_threshold_credits;
    at timestamptz;
BEGIN
    SELECT e.created_at INTO at FROM billing_ledgerentry e WHERE e.account_id = NEW.id ORDER BY e.id DESC LIMIT 1;
    at := coalesce(at, statement_timestamp());
    IF low <> OLD.balance_low THEN
        UPDATE accounts_account SET balance_low = low WHERE id = NEW.id;
        INSERT INTO notifications_event (public_id, type, account_id, data, created_at)
        VALUES ('evt_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24),
                CASE WHEN low THEN 'balance.low' ELSE 'balance.recovered' END, NEW.id,
                jsonb_build_object('available', NEW.available_credits, 'held', NEW.held_credits,
                                   'threshold', NEW.low_balance_threshold_credits),
                at);
    END IF;
    IF NEW.available_credits < NEW.auto_recharge_threshold_credits
       AND OLD.available_credits >= NEW.auto_recharge_threshold_credits THEN
        UPDATE notifications_autorecharge SET state = 'queued', updated_at = at
        WHERE account_id = NEW.id AND enabled AND state = 'idle';
        IF FOUND THEN
            INSERT INTO notifications_recharge
                (public_id, account_id, status, quantity, amount_cents, error, created_at)
            VALUES ('rch_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 24), NEW.id, 'queued', 0, 0, '', at);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
