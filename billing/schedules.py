"""Periodic schedules, declared here and installed for django-celery-beat after every migrate.

Operators may change times or disable a schedule in admin; installing again keeps their
changes and only adds schedules that are missing. All times are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: int | None = None
    crontab: str | None = None  # "minute hour day_of_month month_of_year day_of_week"


SCHEDULES = [
    # Free periods start at midnight UTC on each account's anchor day: five minutes past
    # midnight every day, the refill grants the new period to every account that starts one.
    # It is a no-op for everyone else, and the lazy refill covers anyone who comes earlier.
    Schedule("refill free credits", "billing.refill_free_credits", crontab="5 0 * * *"),
    # Hourly at :15: balances already ignore lapsed lots; this writes their `expire` entries
    # so the ledger and cached balances say so (free lots lapse at midnight, paid ones at
    # their purchase time of day).
    Schedule("expire lapsed grants", "billing.expire_grants", crontab="15 * * * *"),
    # Every minute: holds default to 15 minutes, so a capture that never came is undone
    # within a minute of expiry (spends and reads also release them on the spot).
    Schedule("release expired holds", "billing.release_expired_holds", every_seconds=60),
    # Hourly: idempotency keys are promised for 24 hours and kept for the configured retention.
    Schedule("purge idempotency keys", "billing.purge_idempotency_keys", every_seconds=3600),
    # Every 15 minutes: webhooks normally fulfil a purchase within seconds; this asks Stripe
    # for the last three days' paid sessions and intents, so a purchase whose webhook was lost
    # (endpoint down, secret rotated) gets its credits within a quarter of an hour.
    Schedule("reconcile stripe payments", "billing.reconcile_stripe", every_seconds=900),
    # Nightly at 03:30 UTC, away from the refill (00:05) and the hourly expiry (:15): every ledger
    # invariant, as check_ledger checks them; a breach is logged at ERROR and shown in /metrics.
    # (The reconciliation above raises the same alarm whenever it has to fulfil a purchase.)
    Schedule("audit the ledger", "billing.audit_ledger", crontab="30 3 * * *"),
    # Mondays at 09:00 UTC, while WAITLIST_ENABLED: the week's invitations go out at the start
    # of a working day; a second run in the same week invites only what the quota still allows.
    Schedule("admit from the waitlist", "waitlist.admit_weekly", crontab="0 9 * * 1"),
]


def install(schedules: list[Schedule]) -> int:
    """Create the missing ones of `schedules` (operators' changes to existing ones are kept).
    Returns how many were created. Every app installs its list with this, after each migrate."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    created = 0
    for schedule in schedules:
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


def install_schedules(**kwargs: object) -> int:
    """billing's schedules, installed (a post_migrate receiver)."""
    return install(SCHEDULES)
