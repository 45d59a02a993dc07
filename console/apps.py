from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConsoleConfig(AppConfig):
    """The operator console: audited actions, roles and the overview, on top of the Django admin."""

    name = "console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from console.roles import roles_sync_signal
        from console.schedules import install_rollup_schedule

        # Models added later (by any app) get their view permission in both roles, and beat
        # gets the rollup's schedule, on every migrate.
        post_migrate.connect(roles_sync_signal, dispatch_uid="console.roles_sync")
        post_migrate.connect(install_rollup_schedule, sender=self, dispatch_uid="console.install_rollup_schedule")
