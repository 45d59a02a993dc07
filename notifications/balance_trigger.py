"""The balance trigger's DDL (its function: billing/sql/billing_balance_crossed.sql), today's text,
which migrations 0002 (a fresh database) and 0004 (one made before it was an AFTER trigger) create.

WHEN is evaluated on the row with no function call: a movement that crosses neither threshold
runs nothing more. The trigger is ENABLE ALWAYS: it fires under session_replication_role =
replica too, which the refill sets for its foreign-key checks when no trigger of ours would be
silenced by it.
"""

TRIGGER = """
CREATE TRIGGER notifications_balance_crossed
AFTER UPDATE OF available_credits ON accounts_account
FOR EACH ROW
WHEN ((NEW.available_credits < NEW.low_balance_threshold_credits) <> OLD.balance_low
      OR (NEW.available_credits < NEW.auto_recharge_threshold_credits
          AND OLD.available_credits >= NEW.auto_recharge_threshold_credits))
EXECUTE FUNCTION billing_balance_crossed();
ALTER TABLE accounts_account ENABLE ALWAYS TRIGGER notifications_balance_crossed;
"""
DROP_TRIGGER = "DROP TRIGGER IF EXISTS notifications_balance_crossed ON accounts_account;"
