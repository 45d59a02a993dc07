"""billing_take takes many debits' or holds' credits in one statement; a batch's debits take
theirs together after its last item (billing_debit_batch), and single debits and holds call it
with one take."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0026_batch_quotas")]

    operations = [sql_functions.load("billing_take", "billing_debit", "billing_hold", "billing_debit_batch")]
