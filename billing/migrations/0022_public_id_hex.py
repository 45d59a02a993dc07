"""billing_public_id writes the permuted row id as 16 hex digits in one to_hex() call, with its
rounds unrolled: about a quarter of the PostgreSQL time per grant id of the base62 loop it
replaces. Replaces a function only; touches no row."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0021_batch_writes_once")]

    operations = [sql_functions.load("billing_public_id")]
