"""billing_debit_batch in parts: its accounts locked, read and settled before the first item
(billing_debit_batch_accounts), its items read (billing_debit_batch_items), a debit row made
(billing_debit_batch_row), and the writes after the last item (billing_debit_batch_write)."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0028_checks_one_of")]

    operations = [
        sql_functions.load(
            "billing_debit_batch_accounts",
            "billing_debit_batch_items",
            "billing_debit_batch_row",
            "billing_debit_batch_write",
            "billing_debit_batch",
        )
    ]
