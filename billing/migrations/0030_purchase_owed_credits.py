"""Credits coming back to a purchase's lot after a refund or dispute found them spent or held
pay what the purchase owes first (billing_give_back, used by billing_hold_return and
billing_refund); a clawback of a purchase's lot is counted on the purchase, and a void of one is
refused (billing_take_back)."""

from django.db import migrations

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0029_batch_in_parts")]

    operations = [
        sql_functions.load("billing_give_back", "billing_hold_return", "billing_refund", "billing_take_back")
    ]
