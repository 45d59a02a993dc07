"""billing_key_recorded and billing_operation_price as PL/pgSQL, so that their queries are
planned once per session rather than on every call."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0014_spend_start")]

    operations = [sql_functions.load("billing_key_recorded", "billing_operation_price")]
