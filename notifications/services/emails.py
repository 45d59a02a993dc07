"""The email an event sends its account's user, rendered from templates/notifications/email/
(a subject, a plain-text body and an HTML body per event type) through Django's email framework."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone

from notifications.models import EmailDelivery, Event, EventType

logger = logging.getLogger(__name__)

SUBJECTS = {
    EventType.BALANCE_LOW: "Your credits are running low",
    EventType.CREDITS_EXPIRING: "Some of your credits expire soon",
    EventType.PURCHASE_PAID: "Thank you: your credits have arrived",
    EventType.PURCHASE_REFUNDED: "Your purchase was refunded",
    EventType.AUTO_RECHARGE_SUCCEEDED: "We topped up your credits",
    EventType.AUTO_RECHARGE_FAILED: "We could not top up your credits",
    EventType.ACCOUNT_SUSPENDED: "Your account has been suspended",
}
MAX_ATTEMPTS = 5
FIRST_RETRY_SECONDS = 60
# An attempt under way holds its email this long (next_attempt_at): longer than any SMTP
# conversation, each of whose steps waits at most EMAIL_TIMEOUT (10 s).
ATTEMPT_LEASE_SECONDS = 600


def template_name(event_type: str, extension: str) -> str:
    return f"notifications/email/{event_type.replace('.', '_')}.{extension}"


def email_message(event: Event, to: str) -> EmailMultiAlternatives:
    context = {
        "event": event,
        "data": event.data,
        "site_url": settings.SITE_URL,
        "billing_url": f"{settings.SITE_URL}/billing",
    }
    message = EmailMultiAlternatives(
        subject=SUBJECTS[EventType(event.type)],
        body=render_to_string(template_name(event.type, "txt"), context),
        to=[to],
        headers={"X-Event-Id": event.public_id},
    )
    message.attach_alternative(render_to_string(template_name(event.type, "html"), context), "text/html")
    return message


def retry_delay(attempts: int) -> timedelta:
    """After the n-th failed attempt: 1 min, 2 min, 4 min, 8 min (the fifth fails the email)."""
    return timedelta(seconds=FIRST_RETRY_SECONDS * 2 ** (attempts - 1))


def email_send(*, email_id: int, now: datetime | None = None) -> bool:
    """Attempt a pending email once, if its attempt is due. True when sent now. A failure is
    recorded with the next attempt's time (the retry sweep queues it then), and fails the email
    after MAX_ATTEMPTS."""
    now = now or timezone.now()
    email = EmailDelivery.objects.select_related("event__account").filter(pk=email_id).first()
    if email is None or email.status != EmailDelivery.Status.PENDING or email.next_attempt_at > now:
        return False
    # Compare-and-set on the attempt count: of two tasks for one email (the one queued at the
    # fan-out and the sweep's), one sends. The attempt holds the email for its lease, so the
    # sweep queues it again only if the attempt never records its outcome (its worker died).
    attempt = email.attempts + 1
    if not EmailDelivery.objects.filter(
        pk=email.pk, status=EmailDelivery.Status.PENDING, attempts=email.attempts, next_attempt_at__lte=now
    ).update(attempts=attempt, next_attempt_at=now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)):
        return False
    try:
        email_message(email.event, email.to).send()
    except Exception as exc:
        _failure_record(email, attempt, exc, now)
        return False
    EmailDelivery.objects.filter(pk=email.pk).update(status=EmailDelivery.Status.SENT, sent_at=now, error="")
    return True


def _failure_record(email: EmailDelivery, attempt: int, exc: Exception, now: datetime) -> None:
    """The mail server refused or could not be reached: the next attempt after the backoff, or the
    email failed after MAX_ATTEMPTS."""
    error = repr(exc)[:2000]
    if attempt >= MAX_ATTEMPTS:
        logger.error("email %s failed after %d attempts: %s", email.pk, attempt, error)
        EmailDelivery.objects.filter(pk=email.pk).update(status=EmailDelivery.Status.FAILED, error=error)
        return
    next_at = now + retry_delay(attempt)
    logger.warning("email %s: attempt %d failed, the next is due at %s: %s", email.pk, attempt, next_at, error)
    EmailDelivery.objects.filter(pk=email.pk).update(next_attempt_at=next_at, error=error)


def emails_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending emails whose next attempt is due: never attempted (their queueing may have been
    lost), past a failed attempt's backoff, or past an attempt's lease."""
    now = now or timezone.now()
    due = EmailDelivery.objects.filter(status=EmailDelivery.Status.PENDING, next_attempt_at__lte=now)
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
