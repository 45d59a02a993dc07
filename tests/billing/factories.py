from __future__ import annotations

import itertools
from datetime import UTC, datetime

from django.utils import timezone

from accounts.models import Account, User
from billing.models import Grant
from billing.services.ledger import Actor, grant_create
from billing.signup import account_open

STAFF = Actor("staff", "test")
_emails = itertools.count()


# Recorded as the latest free period granted, it keeps an account out of the free-credit
# machinery: tests of spending start from exactly the credits they give.
NO_FREE_CREDITS = datetime(9999, 1, 1, tzinfo=UTC)


def make_account(*, now: datetime | None = None, status: str = Account.Status.ACTIVE, free: bool = False) -> Account:
    """An account with no credits at all, and none to come unless `free` (signup's and the
    refill's free grants are tested on their own)."""
    user = User.objects.create_user(
        email=f"holder{next(_emails)}-{timezone.now().timestamp()}@example.com", password="x" * 12
    )
    account = account_open(user=user, now=now or timezone.now())
    changes = {} if free else {"free_period_start": NO_FREE_CREDITS}
    if status != Account.Status.ACTIVE:
        changes["status"] = status
    if changes:
        Account.objects.filter(pk=account.pk).update(**changes)
        for field, value in changes.items():
            setattr(account, field, value)
    return account


def give(
    account: Account,
    credits: int,
    *,
    source: str = Grant.Source.ADJUSTMENT,
    expires_at: datetime | None = None,
    priority: int | None = None,
    now: datetime | None = None,
) -> Grant:
    return grant_create(
        account=account,
        source=source,
        credits=credits,
        expires_at=expires_at,
        priority=priority,
        actor=STAFF,
        reason="test",
        now=now or timezone.now(),
    )
