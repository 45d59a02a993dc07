"""Periodic schedules, declared here and installed for django-celery-beat after every migrate.

Operators may change intervals or disable a schedule in admin; installing again keeps their
changes and only adds schedules that are missing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: int


SCHEDULES = [
    # Every minute: holds default to 15 minutes, so a missed capture is undone within a minute
    # of its expiry and the credits are spendable again (reads and spends also settle lazily).
    Schedule("release expired holds", "billing.release_expired_holds", 60),
    # Every 5 minutes: balances already ignore lapsed grants; this writes their `expire` entries
    # so the ledger and the cached balance say so too.
    Schedule("expire lapsed grants", "billing.expire_grants", 300),
    # Hourly: idempotency keys are promised for 24 hours and kept for the configured retention.
    Schedule("purge idempotency keys", "billing.purge_idempotency_keys", 3600),
]


def install_schedules(**kwargs: object) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for schedule in SCHEDULES:
        if PeriodicTask.objects.filter(name=schedule.name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.get_or_create(name=schedule.name, defaults={"task": schedule.task, "interval": interval})
