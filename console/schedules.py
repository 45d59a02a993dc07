"""The rollup's beat schedule, installed after every migrate (billing/schedules.py's pattern)."""

from __future__ import annotations

from typing import Any

ROLLUP_TASK = "console.rollup_ledger"
# Every minute: the overview is at most a couple of minutes behind the ledger (a run rolls up
# what the previous one marked, once every transaction open at the mark has ended).
ROLLUP_SCHEDULE_NAME = "roll up the ledger per day"
ROLLUP_EVERY_SECONDS = 60


def install_rollup_schedule(**kwargs: Any) -> bool:
    """Create the schedule if missing (operators' changes to it are kept). True when created."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if PeriodicTask.objects.filter(name=ROLLUP_SCHEDULE_NAME).exists():
        return False
    interval, _ = IntervalSchedule.objects.get_or_create(every=ROLLUP_EVERY_SECONDS, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name=ROLLUP_SCHEDULE_NAME, task=ROLLUP_TASK, interval=interval)
    return True
