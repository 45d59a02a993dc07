"""Fanning events out once they are committed: a webhook delivery per endpoint that wants the
event, and an email to the account's user unless they switched that kind off. Each event is
fanned out once (a compare-and-set on dispatched_at), however many workers and sweeps see it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from notifications.models import EmailDelivery, Event, Recharge, WebhookDelivery, WebhookEndpoint
from notifications.services.preferences import email_wanted

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


@dataclass
class FanOut:
    webhook_deliveries: list[int] = field(default_factory=list)
    email: int | None = None


def event_fan_out(*, event_id: int, now: datetime | None = None) -> FanOut | None:
    """Make the event's deliveries; None when another run has fanned it out already.

    The deliveries are queued after this transaction commits; those whose queueing fails (the
    broker down) are due at once, and the retry sweeps (webhook_retry_due, email_retry_due) queue
    them.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if not Event.objects.filter(pk=event_id, dispatched_at__isnull=True).update(dispatched_at=now):
            return None
        event = Event.objects.select_related("account__user").get(pk=event_id)
        endpoints = [e for e in WebhookEndpoint.objects.filter(deleted_at__isnull=True) if e.wants(event.type)]
        made = WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(event=event, endpoint=e, next_attempt_at=now, created_at=now) for e in endpoints]
        )
        result = FanOut(webhook_deliveries=[d.pk for d in made])
        if email_wanted(account=event.account, kind=event.type):
            result.email = EmailDelivery.objects.create(
                event=event, to=event.account.user.email, created_at=now, next_attempt_at=now
            ).pk
        transaction.on_commit(lambda: _queue(result), robust=True)
    return result


def _queue(fan_out: FanOut) -> None:
    from notifications.tasks import deliver_webhook, send_email

    for delivery_id in fan_out.webhook_deliveries:
        deliver_webhook.delay(delivery_id)
    if fan_out.email is not None:
        send_email.delay(fan_out.email)


def _fan_out_logged(event_id: int, now: datetime) -> bool:
    """One event's fan-out; a failure is logged and left for the next sweep, so one bad event
    does not hold up the others."""
    try:
        return event_fan_out(event_id=event_id, now=now) is not None
    except Exception:
        logger.exception("fanning out event %s failed; the next sweep tries again", event_id)
        return False


def outbox_sweep(*, now: datetime | None = None) -> tuple[int, list[int]]:
    """Fan out the events not dispatched yet (those the balance trigger wrote, or whose queueing
    was lost) and return (how many, the queued recharges' ids) for the caller to queue."""
    now = now or timezone.now()
    pending = list(
        Event.objects.filter(dispatched_at__isnull=True).order_by("id").values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    fanned = sum(1 for event_id in pending if _fan_out_logged(event_id, now))
    recharges = list(Recharge.objects.filter(status=Recharge.Status.QUEUED).values_list("pk", flat=True)[:SWEEP_BATCH])
    return fanned, recharges
