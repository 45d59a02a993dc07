"""A spend larger than the account's whole daily cap is refused with no time to retry at
(billing_spend_quota's retry_after NULL): it never fits, whatever the day."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0030_credits_coming_back")]

    operations = [sql_functions.load("billing_spend_quota")]
