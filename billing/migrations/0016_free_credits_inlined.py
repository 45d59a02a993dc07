"""billing_free_credits uses each argument once, so that the refill's statement inlines it."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0015_planned_once")]

    operations = [sql_functions.load("billing_free_credits")]
