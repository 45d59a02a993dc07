"""The balance trigger: the account row carries its thresholds and the state last announced,
and billing_balance_crossed (billing/sql/) raises balance.low, balance.recovered and queues a
recharge in the transaction of the movement that crosses one (notifications.models says why these
columns are not fields of accounts.Account).

The trigger is ENABLE ALWAYS: it fires under session_replication_role = replica too, which the
refill sets for its foreign-key checks when no trigger of ours would be silenced by it.
"""

from django.conf import settings
from django.db import migrations

from billing import sql_functions

COLUMNS = """
ALTER TABLE accounts_account
    ADD COLUMN low_balance_threshold_credits bigint NOT NULL DEFAULT {default},
    ADD COLUMN balance_low boolean NOT NULL DEFAULT false,
    ADD COLUMN auto_recharge_threshold_credits bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT account_notification_thresholds_nonnegative
        CHECK (low_balance_threshold_credits >= 0 AND auto_recharge_threshold_credits >= 0);
-- What the accounts are now is what was announced: no event for a state that did not change.
UPDATE accounts_account SET balance_low = true WHERE available_credits < low_balance_threshold_credits;
"""
DROP_COLUMNS = """
ALTER TABLE accounts_account
    DROP CONSTRAINT account_notification_thresholds_nonnegative,
    DROP COLUMN low_balance_threshold_credits,
    DROP COLUMN balance_low,
    DROP COLUMN auto_recharge_threshold_credits;
"""
# WHEN is evaluated on the row with no function call: a movement that crosses neither threshold
# runs nothing more.
TRIGGER = """
CREATE TRIGGER notifications_balance_crossed
BEFORE UPDATE OF available_credits ON accounts_account
FOR EACH ROW
WHEN ((NEW.available_credits < NEW.low_balance_threshold_credits) <> OLD.balance_low
      OR (NEW.available_credits < NEW.auto_recharge_threshold_credits
          AND OLD.available_credits >= NEW.auto_recharge_threshold_credits))
EXECUTE FUNCTION billing_balance_crossed();
ALTER TABLE accounts_account ENABLE ALWAYS TRIGGER notifications_balance_crossed;
"""
DROP_TRIGGER = "DROP TRIGGER notifications_balance_crossed ON accounts_account;"


def _columns(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute(COLUMNS.format(default=int(settings.LOW_BALANCE_THRESHOLD_CREDITS)))


def _drop_columns(apps, schema_editor):  # type: ignore[no-untyped-def]
    schema_editor.execute(DROP_COLUMNS)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]

    operations = [
        migrations.RunPython(_columns, _drop_columns),
        sql_functions.load("billing_balance_crossed"),
        migrations.RunSQL(TRIGGER, DROP_TRIGGER),
    ]
