"""Periodic schedules of notifications, installed for django-celery-beat after every migrate
by billing.schedules.install."""

from __future__ import annotations

from billing.schedules import Schedule, install

SCHEDULES = [
    # Every 5 seconds: the balance trigger writes events and recharges inside the engine's
    # transaction, where no Python runs to queue them; this hands them to the workers. Events
    # raised from Python are queued at commit and are normally gone before it looks.
    Schedule("dispatch notification outbox", "notifications.outbox_sweep", every_seconds=5),
    # Every 30 seconds: webhook deliveries whose backoff is over are attempted again.
    Schedule("retry webhook deliveries", "notifications.webhook_retry_due", every_seconds=30),
    # Every 30 seconds: emails due an attempt are queued: those whose backoff after a failed
    # attempt is over, and those whose queueing at the fan-out was lost (the broker down) or whose
    # attempt never recorded its outcome (the database down, the worker killed).
    Schedule("retry emails", "notifications.email_retry_due", every_seconds=30),
    # Every 10 minutes: auto-recharge charges whose answer from Stripe was lost are asked again
    # with their idempotency key (or failed a day later), so none keeps its account waiting.
    Schedule("settle unanswered recharges", "notifications.recharges_unanswered", every_seconds=600),
    # Hourly at :20: lots expiring within CREDITS_EXPIRING_DAYS get their credits.expiring, once
    # per lot; hourly, because paid lots expire at their purchase's time of day.
    Schedule("announce expiring credits", "notifications.credits_expiring", crontab="20 * * * *"),
    # Nightly at 03:50: events past NOTIFICATION_RETENTION_DAYS whose deliveries are done.
    Schedule("purge old notification events", "notifications.purge_events", crontab="50 3 * * *"),
]


def install_schedules(**kwargs: object) -> int:
    """notifications' schedules, installed (a post_migrate receiver)."""
    return install(SCHEDULES)
