"""Quotas on the spend path: debits and holds count the account's token bucket and its spend of
the UTC day (billing_spend_quota, from billing_spend_start) on the locked account row, and a hold
settled for less than it held gives the rest back to the day (billing_hold_return)."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("accounts", "0006_account_quotas"), ("billing", "0019_compact_checks")]

    operations = [
        sql_functions.load(
            "billing_spend_quota", "billing_spend_start", "billing_debit", "billing_hold", "billing_hold_return"
        ),
    ]
