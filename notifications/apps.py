from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from accounts.signals import account_suspended


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifications.schedules import install_schedules
        from notifications.services.preferences import default_threshold_apply

        # Beat reads schedules from the database; every migrate makes sure ours are there.
        post_migrate.connect(install_schedules, sender=self, dispatch_uid="notifications.install_schedules")
        # The balance trigger reads the threshold from the account row: every migrate brings the
        # rows that follow the default up to LOW_BALANCE_THRESHOLD_CREDITS.
        post_migrate.connect(default_threshold_apply, sender=self, dispatch_uid="notifications.default_threshold")
        # account.suspended is raised in the suspension's transaction (accounts knows no app above it).
        account_suspended.connect(_suspended, dispatch_uid="notifications.account_suspended")


def _suspended(sender: Any, *, account: Any, reason: str, **kwargs: Any) -> None:
    from notifications import events

    events.account_suspended(account=account, reason=reason)
