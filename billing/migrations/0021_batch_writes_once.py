"""The batch debit made lighter: billing_debit_batch reads its accounts once, with the statement
that locks them, runs its items on that copy, and writes the debit rows and each account's cached
balances once, after the last item."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0020_spend_quotas")]

    operations = [sql_functions.load("billing_debit_batch")]
