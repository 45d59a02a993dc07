from django.db import migrations

from billing.migrations_seed import OPERATIONS


def seed(apps, schema_editor):
    Operation = apps.get_model("billing", "Operation")
    for code, credits, description in OPERATIONS:
        Operation.objects.get_or_create(code=code, defaults={"credits": credits, "description": description})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
