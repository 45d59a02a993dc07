"""A voided lot stays voided: billing_take_back sets the grant's voided_at, and credits that come
back to it later (a hold released, a debit refunded) are voided at once (billing_give_back)."""

from django.db import migrations, models

from billing import sql_functions


class Migration(migrations.Migration):
    dependencies = [("billing", "0030_purchase_owed_credits")]

    operations = [
        migrations.AddField(model_name="grant", name="voided_at", field=models.DateTimeField(blank=True, null=True)),
        sql_functions.load("billing_give_back", "billing_hold_return", "billing_refund", "billing_take_back"),
    ]
