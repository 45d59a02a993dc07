"""The admin page of an account's quota overrides (a proxy model: no table of its own)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_account_quotas"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccountQuota",
            fields=[],
            options={
                "verbose_name": "account quota",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("accounts.account",),
        ),
    ]
