"""The status check as a comparison with one constant array instead of a regular-expression
match: as short a tree to read per statement, and a tenth of the time to evaluate per row
(config/constraints.py)."""

from django.db import migrations, models

from config.constraints import one_of, replace_check


class Migration(migrations.Migration):
    atomic = False  # replace_check validates outside the swap's lock

    dependencies = [("accounts", "0007_account_quota_proxy")]

    operations = [
        replace_check(
            "accounts",
            "account",
            models.CheckConstraint(
                condition=models.Q(status__regex="^(active|suspended)$"), name="account_status_valid"
            ),
            models.CheckConstraint(condition=one_of("status", ["active", "suspended"]), name="account_status_valid"),
        ),
    ]
