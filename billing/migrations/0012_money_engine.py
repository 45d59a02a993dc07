"""The money engine: every movement of credits is one PostgreSQL function, loaded from its
source file in billing/sql/ (billing.sql_functions). Replaces billing_spend() (0006, 0010),
billing_capture() (0009), and adds the `void` entry kind.
"""

from importlib import import_module

from django.db import migrations, models

from billing import sql_functions

_SPEND = import_module("billing.migrations.0010_grant_spendable_column")._spend_function_by_spendable()
_CAPTURE = import_module("billing.migrations.0009_capture_function").CAPTURE_FUNCTION
_BALANCE = import_module("billing.migrations.0011_balance_read_functions")

FUNCTIONS = [
    "billing_iso",
    "billing_expired",
    "billing_period_start",
    "billing_period_end",
    "billing_period_index",
    "billing_free_credits",
    "billing_free_due",
    "billing_priority",
    "billing_spendable_lots",
    "billing_operation_price",
    "billing_lapsed_hold",
    "billing_entry",
    "billing_key_recorded",
    "billing_key_record",
    "billing_expire_lots",
    "billing_hold_return",
    "billing_grant_free",
    "billing_settle",
    "billing_lock",
    "billing_take",
    "billing_debit",
    "billing_hold",
    "billing_debit_batch",
    "billing_capture",
    "billing_release",
    "billing_refund",
    "billing_grant",
    "billing_take_back",
]


def _drop_replaced(apps, schema_editor):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cursor:
        for name in ("billing_spend", "billing_capture"):
            sql_functions.drop(cursor, name)


def _restore_replaced(apps, schema_editor):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cursor:
        for text in (_SPEND, _CAPTURE, _BALANCE.ISO_FUNCTION, _BALANCE.LAPSED_HOLD_FUNCTION):
            cursor.execute(text)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_public_id_unique_constraint'),
        ('billing', '0011_balance_read_functions'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='ledgerentry',
            name='ledger_kind_valid',
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='kind',
            field=models.CharField(choices=[('grant', 'Grant'), ('debit', 'Debit'), ('hold', 'Hold'), ('release', 'Release'), ('capture', 'Capture'), ('refund', 'Refund'), ('expire', 'Expire'), ('clawback', 'Clawback'), ('void', 'Void'), ('adjust', 'Adjust')], max_length=16),
        ),
        migrations.AddConstraint(
            model_name='ledgerentry',
            constraint=models.CheckConstraint(condition=models.Q(('kind__in', ['grant', 'debit', 'hold', 'release', 'capture', 'refund', 'expire', 'clawback', 'void', 'adjust'])), name='ledger_kind_valid'),
        ),
        migrations.RunPython(_drop_replaced, _restore_replaced),
        sql_functions.load(*FUNCTIONS),
    ]
