"""Celery tasks of the console: each calls one service."""

from __future__ import annotations

from celery import shared_task

from console.rollup import ledger_rollup
from console.schedules import ROLLUP_TASK


@shared_task(name=ROLLUP_TASK)
def rollup_ledger() -> int:
    """Roll the ledger up per day (every minute, console/schedules.py); the next run is the retry."""
    return ledger_rollup().rolled_up_to_id
