"""Batch debits count toward the account's quotas, as single debits do (billing_debit_batch)."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0025_policy_quotas")]

    operations = [sql_functions.load("billing_debit_batch")]
