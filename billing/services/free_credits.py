"""Free monthly credits: one grant per account and period, made by idempotent code."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account
from billing.models import Grant
from billing.periods import free_credits_for, period_at
from billing.services.ledger import Actor, grant_create


def free_grant_ensure(*, account: Account, actor: Actor, now: datetime | None = None) -> Grant | None:
    """Grant the current period's free credits unless the account has them already.

    Safe to call any number of times, concurrently too: the unique constraint on
    (account, period_start) lets exactly one grant in.
    """
    now = now or timezone.now()
    if account.is_suspended:
        return None
    period = period_at(first_period_start=account.first_period_start, anchor_day=account.period_anchor_day, now=now)
    credits = free_credits_for(period.index)
    if credits <= 0:
        return None
    if Grant.objects.filter(account=account, source=Grant.Source.FREE_MONTHLY, period_start=period.start).exists():
        return None
    try:
        with transaction.atomic():
            return grant_create(
                account=account,
                source=Grant.Source.FREE_MONTHLY,
                credits=credits,
                expires_at=period.end,
                period_start=period.start,
                actor=actor,
                reason=f"free credits, period {period.index}",
                now=now,
            )
    except IntegrityError:
        # Another worker granted this period first; the constraint kept it to one.
        return None
