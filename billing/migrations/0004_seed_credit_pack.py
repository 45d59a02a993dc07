from django.db import migrations

from billing.migrations_seed import CREDIT_PACKS


def seed(apps, schema_editor):
    CreditPack = apps.get_model("billing", "CreditPack")
    for slug, name, credits, price_cents, currency in CREDIT_PACKS:
        CreditPack.objects.get_or_create(
            slug=slug, defaults={"name": name, "credits": credits, "price_cents": price_cents, "currency": currency}
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_credit_packs_purchases_stripe")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
