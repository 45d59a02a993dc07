"""The grants', holds' and ledger's "one of these values" checks as comparisons with one constant
array instead of regular-expression matches: as short a tree to read per statement, and a tenth
of the time to evaluate per row, which the refill pays for each grant and entry it writes
(config/constraints.py)."""

from django.db import migrations, models

from config.constraints import one_of, replace_check

GRANT_SOURCES = ["free_monthly", "purchase", "adjustment", "promo"]
HOLD_STATUSES = ["pending", "captured", "released", "expired"]
LEDGER_KINDS = ["grant", "debit", "hold", "release", "capture", "refund", "expire", "clawback", "void", "adjust"]


def regex(values: list[str]) -> str:
    return "^(" + "|".join(values) + ")$"


def swap(model_name: str, field: str, values: list[str], name: str) -> migrations.SeparateDatabaseAndState:
    return replace_check(
        "billing",
        model_name,
        models.CheckConstraint(condition=models.Q(**{f"{field}__regex": regex(values)}), name=name),
        models.CheckConstraint(condition=one_of(field, values), name=name),
    )


class Migration(migrations.Migration):
    atomic = False  # replace_check validates outside the swap's lock

    dependencies = [("billing", "0027_bulk_take")]

    operations = [
        swap("grant", "source", GRANT_SOURCES, "grant_source_valid"),
        swap("hold", "status", HOLD_STATUSES, "hold_status_valid"),
        swap("ledgerentry", "kind", LEDGER_KINDS, "ledger_kind_valid"),
    ]
