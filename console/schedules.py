"""The rollup's beat schedule, installed after every migrate by billing.schedules.install."""

from __future__ import annotations

from typing import Any

from billing.schedules import Schedule, install

ROLLUP_TASK = "console.rollup_ledger"
# Every minute: the overview is at most a couple of minutes behind the ledger (a run rolls up
# what the previous one marked, once every transaction open at the mark has ended).
ROLLUP_SCHEDULE_NAME = "roll up the ledger per day"
SCHEDULES = [Schedule(ROLLUP_SCHEDULE_NAME, ROLLUP_TASK, every_seconds=60)]


def install_rollup_schedule(**kwargs: Any) -> bool:
    """Create the schedule if missing (operators' changes to it are kept). True when created."""
    return install(SCHEDULES) == 1
