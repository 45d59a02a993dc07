from __future__ import annotations

import itertools
from datetime import datetime

from django.utils import timezone

from accounts.models import Account, User
from accounts.services import account_open
from billing.models import Grant
from billing.services.ledger import Actor, grant_create

STAFF = Actor("staff", "test")
_emails = itertools.count()


def make_account(*, now: datetime | None = None, status: str = Account.Status.ACTIVE) -> Account:
    """An account with no credits at all (signup's free grant is tested on its own)."""
    user = User.objects.create_user(
        email=f"holder{next(_emails)}-{timezone.now().timestamp()}@example.com", password="x" * 12
    )
    account = account_open(user=user, now=now or timezone.now())
    if status != Account.Status.ACTIVE:
        Account.objects.filter(pk=account.pk).update(status=status)
        account.status = status
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
