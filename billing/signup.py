"""Signup: a new user, their account and its first free credits, in one transaction.

Billing's, not accounts': opening an account anchors its free-credit periods (billing.periods,
billing.policy) and grants the first period's credits (billing.services.ledger).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts.models import Account, User
from billing.models import ActorType
from billing.periods import anchor_day_for, boundary_at_or_before
from billing.policy import policy_get
from billing.services.ledger import Actor, account_settle


def user_signup(*, email: str, password: str, now: datetime | None = None) -> User:
    """Create the user, the account and the first period's free credits in one transaction."""
    now = now or timezone.now()
    with transaction.atomic():
        user = User.objects.create_user(email=email, password=password, date_joined=now)
        account = account_open(user=user, now=now)
        account_settle(account=account, actor=Actor(ActorType.USER, str(user.pk)), now=now)
    return user


def account_open(*, user: User, now: datetime) -> Account:
    """The user's account, its free-credit periods anchored on the signup day."""
    anchor = anchor_day_for(now, policy_get().latest_anchor_day)
    return Account.objects.create(
        user=user, created_at=now, period_anchor_day=anchor, first_period_start=boundary_at_or_before(now, anchor)
    )
