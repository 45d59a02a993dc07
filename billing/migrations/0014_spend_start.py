"""A debit, a hold and a batch item decide whether the account may spend by one function
(billing_spend_outcome); a debit and a hold start alike (billing_spend_start)."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_answers_rendered_by_the_engine")]

    operations = [
        sql_functions.load(
            "billing_spend_outcome", "billing_spend_start", "billing_debit", "billing_hold", "billing_debit_batch"
        )
    ]
