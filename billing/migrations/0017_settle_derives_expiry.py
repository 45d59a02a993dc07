"""billing_settle takes the credits expired from billing_expire_lots' answer instead of reading
the account again."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0016_free_credits_inlined")]

    operations = [sql_functions.load("billing_settle")]
