"""Free-credit periods: monthly from the signup day, late-month signups anchored earlier.

All arithmetic is on UTC calendar dates at midnight; the anchor day is at most 28 so that
every month has it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Period:
    index: int  # 0 for the period the account signed up in
    start: datetime
    end: datetime


def anchor_day_for(signup_at: datetime, latest_anchor_day: int) -> int:
    return min(signup_at.astimezone(UTC).day, latest_anchor_day)


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


@dataclass(frozen=True)
class MonthBounds:
    """The calendar of the UTC month a moment falls in, as SQL that decides period_at's start for
    any anchor day takes it (billing.selectors.FREE_GRANT_DUE_SQL): the day of the month, and the
    first days of this, the previous and the next month."""

    day: int
    this_month: date
    previous_month: date
    next_month: date

    @property
    def params(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "this_month": self.this_month,
            "previous_month": self.previous_month,
            "next_month": self.next_month,
        }


def month_bounds(moment: datetime) -> MonthBounds:
    return _month_bounds(moment.astimezone(UTC).date())


@functools.lru_cache(maxsize=8)
def _month_bounds(day: date) -> MonthBounds:
    this_month = day.replace(day=1)
    return MonthBounds(
        day=day.day,
        this_month=this_month,
        previous_month=(this_month - timedelta(days=1)).replace(day=1),
        next_month=(this_month + timedelta(days=31)).replace(day=1),
    )
