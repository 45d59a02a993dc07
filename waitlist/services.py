"""The waitlist's writes: join, the weekly admission, operators' decisions, invitations.

The services that make invitations return their ids; the caller has them emailed once its
transaction commits (waitlist.tasks.invitations_email), never while a row is locked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.ids import row_id_of, row_public_id
from accounts.models import User
from config.errors import DomainError

from .models import AdmissionWeek, Invitation, WaitlistEntry, WaitlistPolicy

logger = logging.getLogger(__name__)

TOKEN_SALT = "waitlist.invitation"
INVITATION_PREFIX = "inv_"
WEEKLY_ADMISSION = "weekly admission"


class InvitationRefused(DomainError):
    """Signup while the waitlist is on, without a usable invitation. `reason`: missing, invalid,
    used or expired."""

    status_code = 403
    code = "invitation_required"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


def normalize_email(email: str) -> str:
    return email.strip().lower()


def policy_get() -> WaitlistPolicy:
    policy, _ = WaitlistPolicy.objects.get_or_create(pk=1, defaults={"weekly_quota": settings.WAITLIST_WEEKLY_QUOTA})
    return policy


def waitlist_join(*, email: str, now: datetime | None = None) -> tuple[WaitlistEntry, bool]:
    """The entry of `email`, and whether this call created it. The unique constraint decides a
    race between two joins (get_or_create reads the winner's row)."""
    return WaitlistEntry.objects.get_or_create(
        email=normalize_email(email), defaults={"joined_at": now or timezone.now()}
    )


@dataclass(frozen=True)
class Admission:
    week_start: datetime
    quota: int
    invitation_ids: list[int]


def weekly_admission_run(*, now: datetime | None = None) -> Admission:
    """Invite the oldest waiting entries, as many as the weekly quota leaves this week. The
    week's row is locked first, so a second run (a retry, or beat firing twice) waits for the
    first and invites only what the quota still allows: nothing is admitted twice."""
    now = now or timezone.now()
    start = monday_of(now)
    quota = policy_get().weekly_quota
    with transaction.atomic():
        AdmissionWeek.objects.get_or_create(week_start=start)
        week = AdmissionWeek.objects.select_for_update().get(week_start=start)
        room = max(quota - week.admitted, 0)
        # SKIP LOCKED: an entry an operator is deciding on right now is left to them.
        oldest = (
            WaitlistEntry.objects.select_for_update(skip_locked=True)
            .filter(status=WaitlistEntry.Status.WAITING)
            .order_by("joined_at", "id")[:room]
        )
        invitations = _invite(list(oldest), now=now, by=WEEKLY_ADMISSION)
        week.admitted += len(invitations)
        week.save(update_fields=["admitted"])
    logger.info("waitlist: invited %d of the week's quota of %d", len(invitations), quota)
    return Admission(week_start=start, quota=quota, invitation_ids=[i.pk for i in invitations])


def monday_of(now: datetime) -> datetime:
    midnight = now.astimezone(timezone.get_fixed_timezone(0)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=midnight.weekday())


def entries_admit(*, entry_ids: Iterable[int], by: str, now: datetime | None = None) -> list[int]:
    """An operator invites entries by hand, outside the weekly quota: waiting or skipped ones,
    and invited ones whose invitation expired unused (it is replaced). Returns the new
    invitations' ids."""
    now = now or timezone.now()
    with transaction.atomic():
        entries = list(
            WaitlistEntry.objects.select_for_update().filter(pk__in=list(entry_ids)).order_by("joined_at", "id")
        )
        lapsed = Invitation.objects.filter(entry__in=entries, used_at__isnull=True, expires_at__lte=now)
        lapsed.delete()
        open_invitations = set(Invitation.objects.filter(entry__in=entries).values_list("entry_id", flat=True))
        return [i.pk for i in _invite([e for e in entries if e.pk not in open_invitations], now=now, by=by)]


def entries_skip(*, entry_ids: Iterable[int], by: str, now: datetime | None = None) -> int:
    """An operator passes over waiting entries; the weekly admission leaves them. A
    compare-and-set: an entry invited meanwhile stays invited."""
    return WaitlistEntry.objects.filter(pk__in=list(entry_ids), status=WaitlistEntry.Status.WAITING).update(
        status=WaitlistEntry.Status.SKIPPED, decided_at=now or timezone.now(), decided_by=by
    )


def entries_remove(*, entry_ids: Iterable[int]) -> int:
    """An operator removes entries; their unused invitations stop working with them.

    The entries are locked first: an admission inviting them right now holds them until its
    invitations commit, and the delete, which collects the invitations to delete with them before
    deleting the entries, then finds those too instead of leaving them to break the foreign key."""
    with transaction.atomic():
        locked = list(
            WaitlistEntry.objects.select_for_update().filter(pk__in=list(entry_ids)).values_list("pk", flat=True)
        )
        deleted, _ = WaitlistEntry.objects.filter(pk__in=locked).delete()
    return deleted


def _invite(entries: list[WaitlistEntry], *, now: datetime, by: str) -> list[Invitation]:
    """Invitations for locked entries, which become invited."""
    if not entries:
        return []
    expires = now + timedelta(days=settings.WAITLIST_INVITATION_DAYS)
    invitations = Invitation.objects.bulk_create(
        Invitation(entry=e, email=e.email, created_at=now, expires_at=expires) for e in entries
    )
    WaitlistEntry.objects.filter(pk__in=[e.pk for e in entries]).update(
        status=WaitlistEntry.Status.INVITED, decided_at=now, decided_by=by
    )
    return invitations


def invitation_token(invitation: Invitation) -> str:
    """Signed, not hidden: it names the invitation by a public id (no row id leaves the database)."""
    return signing.Signer(salt=TOKEN_SALT).sign(row_public_id(INVITATION_PREFIX, invitation.pk))


def invitation_link(invitation: Invitation) -> str:
    query = urlencode({"invitation": invitation_token(invitation)})
    return f"{settings.SITE_URL}{reverse('web-signup')}?{query}"


def invitation_redeem(*, token: str, user: User, now: datetime) -> Invitation:
    """Use up the invitation `token` names for `user`'s signup, in the caller's transaction.
    A compare-and-set on `used_at`: of two signups racing with one token, the second waits for
    the first's row lock and then finds it used. InvitationRefused otherwise."""
    if not token:
        raise InvitationRefused(
            "Signups are by invitation: join the waitlist and we will email you one.", reason="missing"
        )
    try:
        pk = row_id_of(INVITATION_PREFIX, signing.Signer(salt=TOKEN_SALT).unsign(token))
    except signing.BadSignature:
        pk = None
    if pk is None:
        raise InvitationRefused("This invitation is not valid.", reason="invalid")
    used = Invitation.objects.filter(pk=pk, used_at__isnull=True, expires_at__gt=now).update(used_at=now, used_by=user)
    if used:
        return Invitation.objects.get(pk=pk)
    invitation = Invitation.objects.filter(pk=pk).first()
    if invitation is None:
        raise InvitationRefused("This invitation was withdrawn.", reason="invalid")
    if invitation.used_at is not None:
        raise InvitationRefused("This invitation was used already.", reason="used")
    raise InvitationRefused("This invitation has expired; ask us for a new one.", reason="expired")


def invitation_email_send(*, invitation_id: int, now: datetime | None = None) -> bool:
    """Email an invitation its link; False when it is gone or used."""
    invitation = Invitation.objects.filter(pk=invitation_id, used_at__isnull=True).first()
    if invitation is None:
        return False
    context = {"link": invitation_link(invitation), "expires_at": invitation.expires_at}
    send_mail(
        subject="Your invitation to sign up",
        message=render_to_string("waitlist/invitation_email.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )
    Invitation.objects.filter(pk=invitation.pk).update(emailed_at=now or timezone.now())
    return True
