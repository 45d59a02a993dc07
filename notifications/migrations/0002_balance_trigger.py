"""The balance trigger: the account row carries its thresholds and the state last announced,
and billing_balance_crossed (billing/sql/) raises balance.low, balance.recovered and queues a
recharge in the transaction of the movement that crosses one (notifications.models says why these
columns are not fields of accounts.Account).

The trigger's DDL is today's (notifications/balance_trigger.py), as the function's is today's
billing/sql/ text.
"""

from django.conf import settings
from django.db import migrations

from billing import sql_functions
from notifications.balance_trigger import DROP_TRIGGER, TRIGGER

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
