"""The settling before a spend in a function of its own (billing_spend_settle), which the batch
can share: it answers the account with its spend of the day after a lapsed hold gave some back."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0022_public_id_hex")]

    operations = [sql_functions.load("billing_spend_settle", "billing_spend_start")]
