"""Public ids of grants (grt_...) rendered by PostgreSQL: billing_public_id, the SQL twin of
accounts.ids.row_public_id. Adds no column and touches no row: grants, ledger entries, users and
service keys keep their tables as they are, so this migration costs one CREATE FUNCTION whatever
their size."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0017_settle_derives_expiry")]

    operations = [sql_functions.load("billing_public_id")]
