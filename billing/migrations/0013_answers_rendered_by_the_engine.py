"""The movement functions render their answers (billing_debit_json, billing_hold_json) and record
them under the Idempotency-Key; release and refund take the key too."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0012_money_engine")]

    operations = [
        sql_functions.load(
            "billing_debit_json",
            "billing_hold_json",
            "billing_key_record",
            "billing_debit",
            "billing_hold",
            "billing_debit_batch",
            "billing_capture",
            "billing_release",
            "billing_refund",
        )
    ]
