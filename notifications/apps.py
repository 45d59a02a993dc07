from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from accounts.signals import account_suspended
from billing.signals import lot_granted


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
        # credits.expiring for a lot granted already close to its expiry, in the grant's transaction.
        lot_granted.connect(_lot_granted, dispatch_uid="notifications.lot_granted")


def _suspended(sender: Any, *, account: Any, reason: str, **kwargs: Any) -> None:
    from notifications import events

    events.account_suspended(account=account, reason=reason)


def _lot_granted(sender: Any, *, grant: Any, now: Any, **kwargs: Any) -> None:
    from notifications.services.expiring import lot_granted_announce

    lot_granted_announce(grant=grant, now=now)
