"""The account's quotas: operators' overrides of the rate limit and the daily cap, the token bucket
and the day's spend (counted by billing's spend functions under the row lock). No check
constraints: every one is paid on each write of the row."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_compact_checks"),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="daily_cap_credits",
            field=models.BigIntegerField(
                blank=True,
                help_text="Credits a UTC day; empty: the setting.",
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddField(
            model_name="account",
            name="day_spent",
            field=models.BigIntegerField(db_default=0, default=0, editable=False),
        ),
        migrations.AddField(
            model_name="account",
            name="day_started",
            field=models.DateField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="account",
            name="rate_checked_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="account",
            name="rate_limit_burst",
            field=models.IntegerField(
                blank=True,
                help_text="Spends at once; empty: the setting.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="account",
            name="rate_limit_per_minute",
            field=models.IntegerField(
                blank=True,
                help_text="Spends a minute; empty: the setting.",
                null=True,
                validators=[django.core.validators.MinValueValidator(0)],
            ),
        ),
        migrations.AddField(
            model_name="account",
            name="rate_tokens",
            field=models.FloatField(blank=True, editable=False, null=True),
        ),
    ]
