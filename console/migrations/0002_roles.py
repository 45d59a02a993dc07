"""The operators' roles, `support` and `finance` (console/roles.py), as Django groups with their
permissions. The permissions are created first: Django makes them only after a migrate."""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

from console.roles import FINANCE, SUPPORT, roles_sync


def _install(apps, schema_editor):  # type: ignore[no-untyped-def]
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    roles_sync(apps)


def _remove(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "Group").objects.filter(name__in=[SUPPORT, FINANCE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("billing", "0017_settle_derives_expiry"),
        ("django_celery_beat", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(_install, _remove)]
