"""Shorter checks on the account row, which every movement writes (config/constraints.py): the
status check as a regular-expression match, and no separate "not negative" check on the anchor
day, which account_anchor_day_range already bounds."""

from django.db import migrations, models

from config.constraints import replace_check


class Migration(migrations.Migration):
    atomic = False  # replace_check validates outside the swap's lock

    dependencies = [("accounts", "0004_user_email_verified_at")]

    operations = [
        migrations.AlterField(model_name="account", name="period_anchor_day", field=models.SmallIntegerField()),
        replace_check(
            "accounts",
            "account",
            models.CheckConstraint(condition=models.Q(status__in=["active", "suspended"]), name="account_status_valid"),
            models.CheckConstraint(
                condition=models.Q(status__regex="^(active|suspended)$"), name="account_status_valid"
            ),
        ),
    ]
