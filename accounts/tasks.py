"""Celery tasks of accounts: each takes ids, calls one service, and retries on its own."""

from __future__ import annotations

import smtplib

from celery import shared_task

from .verification import email_verification_send

SEND_MAX_RETRIES = 5


@shared_task(name="accounts.send_verification_email", bind=True, max_retries=SEND_MAX_RETRIES)
def send_verification_email(self, user_id: int) -> bool:  # type: ignore[no-untyped-def]
    """The mail server refusing or unreachable: retried with backoff (1 s, 2 s, ... 16 s)."""
    try:
        return email_verification_send(user_id=user_id)
    except (smtplib.SMTPException, OSError) as exc:
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
