"""Signup: a new user, their account and its first free credits, in one transaction.

Billing's, not accounts': opening an account anchors its free-credit periods (billing.policy,
billing_period_start) and grants the first period's credits (billing.services.ledger).
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Account, User
from billing.models import ActorType
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


def anchor_day_for(signup_at: datetime, latest_anchor_day: int) -> int:
    """The day of the month an account's periods start on: its signup day (UTC), at most the
    policy's latest anchor day, so that every month has it."""
    return min(signup_at.astimezone(UTC).day, latest_anchor_day)


def account_open(*, user: User, now: datetime) -> Account:
    """The user's account, its free-credit periods anchored on the signup day: the first one
    starts at the anchor day's midnight at or before signup (billing_period_start, with no
    first period before it)."""
    anchor = anchor_day_for(now, policy_get().latest_anchor_day)
    with connection.cursor() as cursor:
        cursor.execute("SELECT billing_period_start('-infinity', %s, %s)", [anchor, now])
        (first,) = cursor.fetchone()
    return Account.objects.create(user=user, created_at=now, period_anchor_day=anchor, first_period_start=first)
