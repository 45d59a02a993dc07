"""Free-credit periods in plain Python: the oracle the engine's SQL period functions
(billing_period_start, billing_period_end, billing_period_index) are tested against.

Periods run monthly from the anchor day (at most 28, so that every month has it); all
arithmetic is on UTC calendar dates at midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Period:
    index: int  # 0 for the period the account signed up in
    start: datetime
    end: datetime


def _boundary(year: int, month: int, anchor_day: int) -> datetime:
    return datetime(year, month, anchor_day, tzinfo=UTC)


def add_months(moment: datetime, months: int, anchor_day: int) -> datetime:
    total = moment.year * 12 + (moment.month - 1) + months
    return _boundary(total // 12, total % 12 + 1, anchor_day)


def boundary_at_or_before(moment: datetime, anchor_day: int) -> datetime:
    moment = moment.astimezone(UTC)
    start = _boundary(moment.year, moment.month, anchor_day)
    return start if start <= moment else add_months(start, -1, anchor_day)


def period_at(*, first_period_start: datetime, anchor_day: int, now: datetime) -> Period:
    start = boundary_at_or_before(now, anchor_day)
    first = first_period_start.astimezone(UTC)
    index = (start.year - first.year) * 12 + (start.month - first.month)
    if index < 0:  # a clock moved back before signup: treat as the first period
        start, index = first, 0
    return Period(index=index, start=start, end=add_months(start, 1, anchor_day))
