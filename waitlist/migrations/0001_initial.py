import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def seed_policy(apps, schema_editor):
    # The weekly quota operators edit in the admin, starting from WAITLIST_WEEKLY_QUOTA.
    apps.get_model("waitlist", "WaitlistPolicy").objects.get_or_create(
        pk=1, defaults={"weekly_quota": settings.WAITLIST_WEEKLY_QUOTA}
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AdmissionWeek",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("week_start", models.DateTimeField(unique=True)),
                ("admitted", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="WaitlistEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("email", models.EmailField(max_length=254)),
                (
                    "status",
                    models.CharField(
                        choices=[("waiting", "Waiting"), ("invited", "Invited"), ("skipped", "Skipped")],
                        default="waiting",
                        max_length=16,
                    ),
                ),
                ("joined_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                ("decided_by", models.CharField(blank=True, default="", max_length=254)),
            ],
            options={
                "verbose_name_plural": "waitlist entries",
                "indexes": [
                    models.Index(
                        condition=models.Q(("status", "waiting")),
                        fields=["joined_at", "id"],
                        name="waitlist_waiting_oldest",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(fields=("email",), name="waitlist_entry_email_unique"),
                    models.CheckConstraint(
                        condition=models.Q(("status__in", ["waiting", "invited", "skipped"])),
                        name="waitlist_entry_status_valid",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="Invitation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("email", models.EmailField(max_length=254)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("expires_at", models.DateTimeField()),
                ("emailed_at", models.DateTimeField(blank=True, null=True)),
                ("used_at", models.DateTimeField(blank=True, null=True)),
                (
                    "entry",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="invitation",
                        to="waitlist.waitlistentry",
                    ),
                ),
                (
                    "used_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="WaitlistPolicy",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "weekly_quota",
                    models.PositiveIntegerField(help_text="Entries the weekly admission invites at most each week."),
                ),
            ],
            options={
                "verbose_name_plural": "waitlist policy",
                "constraints": [models.CheckConstraint(condition=models.Q(("id", 1)), name="waitlist_policy_single_row")],
            },
        ),
        migrations.RunPython(seed_policy, migrations.RunPython.noop),
    ]
