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
    try:
        with transaction.atomic():
            # Decide on the locked row, not the caller's copy: an operator may have suspended
            # the account since it was loaded.
            locked = Account.objects.select_for_update().get(pk=account.pk)
            if locked.is_suspended:
                return None
            period = period_at(
                first_period_start=locked.first_period_start, anchor_day=locked.period_anchor_day, now=now
            )
            credits = free_credits_for(period.index)
            if credits <= 0 or _has_free_grant(locked, period.start):
                return None
            return grant_create(
                account=locked,
                source=Grant.Source.FREE_MONTHLY,
                credits=credits,
                expires_at=period.end,
                period_start=period.start,
                actor=actor,
                reason=f"free credits, period {period.index}",
                now=now,
            )
    except IntegrityError:
        # Another writer granted this period first; the unique constraint kept it to one.
        return None


def _has_free_grant(account: Account, period_start: datetime) -> bool:
    return Grant.objects.filter(account=account, source=Grant.Source.FREE_MONTHLY, period_start=period_start).exists()
