"""The spend path made lighter: shorter checks on the tables every movement writes
(config/constraints.py), and the functions of a debit and a hold with fewer statements
(billing_take takes every lot in one statement; billing_spend_start finds and locks the account
in one, and leaves the replay check to the key's unique index)."""

from django.db import migrations, models
from django.db.models.lookups import Exact, IsNull

from billing import sql_functions
from config.constraints import replace_check

GRANT_SOURCES = ["free_monthly", "purchase", "adjustment", "promo"]
HOLD_STATUSES = ["pending", "captured", "released", "expired"]
LEDGER_KINDS = ["grant", "debit", "hold", "release", "capture", "refund", "expire", "clawback", "void", "adjust"]


def regex(values: list[str]) -> str:
    return "^(" + "|".join(values) + ")$"


class Migration(migrations.Migration):
    atomic = False  # replace_check validates outside the swap's lock

    dependencies = [("accounts", "0005_compact_checks"), ("billing", "0018_public_row_ids")]

    operations = [
        replace_check(
            "billing",
            "grant",
            models.CheckConstraint(condition=models.Q(source__in=GRANT_SOURCES), name="grant_source_valid"),
            models.CheckConstraint(condition=models.Q(source__regex=regex(GRANT_SOURCES)), name="grant_source_valid"),
        ),
        replace_check(
            "billing",
            "grant",
            models.CheckConstraint(
                condition=models.Q(source="free_monthly", period_start__isnull=False)
                | (~models.Q(source="free_monthly") & models.Q(period_start__isnull=True)),
                name="grant_period_only_for_free",
            ),
            models.CheckConstraint(
                condition=Exact(
                    IsNull(models.F("period_start"), False), Exact(models.F("source"), models.Value("free_monthly"))
                ),
                name="grant_period_only_for_free",
            ),
        ),
        replace_check(
            "billing",
            "hold",
            models.CheckConstraint(condition=models.Q(status__in=HOLD_STATUSES), name="hold_status_valid"),
            models.CheckConstraint(condition=models.Q(status__regex=regex(HOLD_STATUSES)), name="hold_status_valid"),
        ),
        replace_check(
            "billing",
            "ledgerentry",
            models.CheckConstraint(condition=models.Q(kind__in=LEDGER_KINDS), name="ledger_kind_valid"),
            models.CheckConstraint(condition=models.Q(kind__regex=regex(LEDGER_KINDS)), name="ledger_kind_valid"),
        ),
        sql_functions.load(
            "billing_iso",
            "billing_spendable_lots",
            "billing_take",
            "billing_spend_start",
            "billing_debit",
            "billing_hold",
            "billing_debit_batch",
        ),
    ]
