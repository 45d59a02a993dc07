"""The balance trigger fires AFTER the update, not BEFORE it (billing_balance_crossed records the
state announced with an update of its own): a BEFORE row trigger made PostgreSQL lock every
account row before updating its balance, whatever the trigger's WHEN said."""

from django.db import migrations

from billing import sql_functions
from notifications.balance_trigger import DROP_TRIGGER, TRIGGER


class Migration(migrations.Migration):
    dependencies = [("notifications", "0003_webhook_resend_permission")]

    operations = [
        migrations.RunSQL(DROP_TRIGGER, migrations.RunSQL.noop),
        sql_functions.load("billing_balance_crossed"),
        migrations.RunSQL(TRIGGER, DROP_TRIGGER),
    ]
