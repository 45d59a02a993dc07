"""Celery tasks of the waitlist: each takes ids or nothing, calls one service, and retries on its own."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence

from celery import shared_task
from django.conf import settings
from django.db import transaction

from .services import invitation_email_send, weekly_admission_run

logger = logging.getLogger(__name__)

SEND_MAX_RETRIES = 5


def invitations_email(invitation_ids: Sequence[int]) -> None:
    """Queue one email per invitation once the transaction that made them commits."""
    ids = list(invitation_ids)
    transaction.on_commit(lambda: [send_invitation.delay(pk) for pk in ids])


@shared_task(name="waitlist.admit_weekly")
def admit_weekly() -> int:
    """The weekly admission (waitlist.services.weekly_admission_run), while the waitlist is on."""
    if not settings.WAITLIST_ENABLED:
        logger.info("waitlist: off (WAITLIST_ENABLED), nobody invited")
        return 0
    admission = weekly_admission_run()
    invitations_email(admission.invitation_ids)
    return len(admission.invitation_ids)


@shared_task(name="waitlist.send_invitation", bind=True, max_retries=SEND_MAX_RETRIES)
def send_invitation(self, invitation_id: int) -> bool:  # type: ignore[no-untyped-def]
    """The mail server refusing or unreachable: retried with backoff (1 s, 2 s, ... 16 s); the
    last failure is logged at ERROR, and the invitation stays without `emailed_at` (the admin's
    "Email again" sends it later)."""
    try:
        return invitation_email_send(invitation_id=invitation_id)
    except (smtplib.SMTPException, OSError) as exc:
        if self.request.retries >= SEND_MAX_RETRIES:
            logger.error("waitlist: invitation %s could not be emailed: %s", invitation_id, exc)
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
