"""Periodic schedules of notifications, installed for django-celery-beat after every migrate
(billing.schedules installs them the same way)."""

from __future__ import annotations

from billing.schedules import Schedule

SCHEDULES = [
    # Every 5 seconds: the balance trigger writes events and recharges inside the engine's
    # transaction, where no Python runs to queue them; this hands them to the workers. Events
    # raised from Python are queued at commit and are normally gone before it looks.
    Schedule("dispatch notification outbox", "notifications.outbox_sweep", every_seconds=5),
    # Every 30 seconds: webhook deliveries whose backoff is over are attempted again.
    Schedule("retry webhook deliveries", "notifications.webhook_retry_due", every_seconds=30),
    # Hourly at :20: lots expiring within CREDITS_EXPIRING_DAYS get their credits.expiring, once
    # per lot; hourly, because paid lots expire at their purchase's time of day.
    Schedule("announce expiring credits", "notifications.credits_expiring", crontab="20 * * * *"),
]


def install_schedules(**kwargs: object) -> int:
    """Create missing schedules (operators' changes to existing ones are kept). Returns how many
    were created. The same steps as billing.schedules.install_schedules, for this app's list."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = 0
    for schedule in SCHEDULES:
        if PeriodicTask.objects.filter(name=schedule.name).exists():
            continue
        when: dict[str, object]
        if schedule.crontab:
            minute, hour, day_of_month, month_of_year, day_of_week = schedule.crontab.split()
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                timezone="UTC",
            )
            when = {"crontab": crontab}
        else:
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=schedule.every_seconds, period=IntervalSchedule.SECONDS
            )
            when = {"interval": interval}
        PeriodicTask.objects.create(name=schedule.name, task=schedule.task, **when)
        created += 1
    return created
