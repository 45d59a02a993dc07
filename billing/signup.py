"""Signup: a new user, their account and its free credits, in one transaction.

Billing's, not accounts': opening an account anchors its free-credit periods (billing.policy,
billing_period_start) and grants the first period's credits (billing.services.ledger).

Where EMAIL_VERIFICATION_REQUIRED is on, the free credits wait for a verified email: the account
is opened with FREE_CREDITS_WITHHELD recorded as its latest free period granted, which keeps it
out of the free-credit machinery (billing_free_due is false until a period starts after it), and
signup emails the signed verification link (accounts.verification). Verifying clears the mark
and starts the account's free-credit periods that day, so the first period's credits are granted
then. An invitation from the waitlist, used with the email it was sent to, verifies that email.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Account, User
from accounts.tasks import send_verification_email
from accounts.verification import email_verification_user, email_verified_mark
from billing.models import ActorType
from billing.policy import policy_get
from billing.services.ledger import Actor, account_settle
from waitlist.services import invitation_redeem

# Recorded as an account's latest free period granted: no period starts after it, so the account
# is owed no free credits until email_verify clears it.
FREE_CREDITS_WITHHELD = datetime(9999, 1, 1, tzinfo=UTC)


def user_signup(*, email: str, password: str, invitation: str = "", now: datetime | None = None) -> User:
    """Create the user and the account in one transaction, with the first period's free credits
    unless they wait for the email to be verified. While the waitlist is on, `invitation` must
    be a valid, unused, unexpired invitation token (waitlist.services.invitation_redeem), used
    up by this signup."""
    now = now or timezone.now()
    with transaction.atomic():
        user = User.objects.create_user(email=email, password=password, date_joined=now)
        if settings.WAITLIST_ENABLED:
            invited = invitation_redeem(token=invitation, user=user, now=now)
            if invited.email == user.email:  # the invitation reached this mailbox
                email_verified_mark(user=user, now=now)
        waits = free_credits_wait(user)
        account = account_open(user=user, now=now, free_credits=not waits)
        account_settle(account=account, actor=Actor(ActorType.USER, str(user.pk)), now=now)
        if waits:
            transaction.on_commit(lambda: send_verification_email.delay(user.pk))
    return user


def free_credits_wait(user: User) -> bool:
    """Whether the user's free credits wait for their email to be verified."""
    return settings.EMAIL_VERIFICATION_REQUIRED and user.email_verified_at is None


def email_verify(*, token: str, now: datetime | None = None) -> tuple[User, bool]:
    """Verify the email a link was sent to (VerificationLinkInvalid for a bad link) and release
    the account's withheld free credits. Returns the user and whether this call verified it
    (False: it was already)."""
    now = now or timezone.now()
    user = email_verification_user(token)
    with transaction.atomic():
        verified_now = email_verified_mark(user=user, now=now)
        if verified_now:
            free_credits_release(account=Account.objects.get(user=user), now=now)
    return user, verified_now


def free_credits_release(*, account: Account, now: datetime) -> bool:
    """Start the free-credit periods of an account whose credits were withheld, on `now`'s day,
    and grant the first period's credits. A compare-and-set on the mark: releasing twice grants
    once. False when nothing was withheld."""
    anchor, first = periods_from(now)
    released = Account.objects.filter(pk=account.pk, free_period_start=FREE_CREDITS_WITHHELD).update(
        period_anchor_day=anchor, first_period_start=first, free_period_start=None
    )
    if released:
        account_settle(account=account, actor=Actor(ActorType.USER, str(account.user_id)), now=now)
    return bool(released)


def anchor_day_for(signup_at: datetime, latest_anchor_day: int) -> int:
    """The day of the month an account's periods start on: its signup day (UTC), at most the
    policy's latest anchor day, so that every month has it."""
    return min(signup_at.astimezone(UTC).day, latest_anchor_day)


def periods_from(now: datetime) -> tuple[int, datetime]:
    """The anchor day and the first period's start of free-credit periods starting on `now`'s
    day: the first one starts at the anchor day's midnight at or before `now`
    (billing_period_start, with no first period before it)."""
    anchor = anchor_day_for(now, policy_get().latest_anchor_day)
    with connection.cursor() as cursor:
        cursor.execute("SELECT billing_period_start('-infinity', %s, %s)", [anchor, now])
        (first,) = cursor.fetchone()
    return anchor, first


def account_open(*, user: User, now: datetime, free_credits: bool = True) -> Account:
    """The user's account, its free-credit periods anchored on the signup day; with
    `free_credits` False they are withheld (FREE_CREDITS_WITHHELD) until released."""
    anchor, first = periods_from(now)
    return Account.objects.create(
        user=user,
        created_at=now,
        period_anchor_day=anchor,
        first_period_start=first,
        free_period_start=None if free_credits else FREE_CREDITS_WITHHELD,
    )


def free_credits_withheld(account: Account) -> bool:
    """Whether the account's free credits wait for its user's verified email."""
    return account.free_period_start == FREE_CREDITS_WITHHELD
