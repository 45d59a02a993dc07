"""Celery tasks of accounts: each takes ids, calls one service, and retries on its own."""

from __future__ import annotations

import logging
import smtplib

from celery import shared_task

from .verification import email_verification_send

logger = logging.getLogger(__name__)

SEND_MAX_RETRIES = 5


@shared_task(name="accounts.send_verification_email", bind=True, max_retries=SEND_MAX_RETRIES)
def send_verification_email(self, user_id: int) -> bool:  # type: ignore[no-untyped-def]
    """The mail server refusing or unreachable: retried with backoff (1 s, 2 s, ... 16 s); the
    last failure is logged at ERROR (the user may ask for the link again)."""
    try:
        return email_verification_send(user_id=user_id)
    except (smtplib.SMTPException, OSError) as exc:
        if self.request.retries >= SEND_MAX_RETRIES:
            logger.error("verification email to user %s could not be sent: %s", user_id, exc)
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
