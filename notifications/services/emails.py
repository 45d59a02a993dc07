"""The email an event sends its account's user, rendered from templates/notifications/email/
(a subject, a plain-text body and an HTML body per event type) through Django's email framework."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import timezone

from notifications.models import EmailDelivery, Event, EventType

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


def email_send(*, email_id: int, now: datetime | None = None) -> bool:
    """Send a pending email once. True when sent now; a failure is recorded and raised for the
    task to retry, and the email is failed after MAX_ATTEMPTS."""
    now = now or timezone.now()
    email = EmailDelivery.objects.select_related("event__account").filter(pk=email_id).first()
    if email is None or email.status != EmailDelivery.Status.PENDING:
        return False
    # Compare-and-set on the attempt count: of two tasks for one email, one sends.
    attempt = email.attempts + 1
    if not EmailDelivery.objects.filter(pk=email.pk, status=email.status, attempts=email.attempts).update(
        attempts=attempt
    ):
        return False
    try:
        email_message(email.event, email.to).send()
    except Exception as exc:
        status = EmailDelivery.Status.FAILED if attempt >= MAX_ATTEMPTS else EmailDelivery.Status.PENDING
        EmailDelivery.objects.filter(pk=email.pk).update(status=status, error=repr(exc)[:2000])
        raise
    EmailDelivery.objects.filter(pk=email.pk).update(status=EmailDelivery.Status.SENT, sent_at=now, error="")
    return True
