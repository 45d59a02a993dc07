"""Notifications are kept for NOTIFICATION_RETENTION_DAYS: an event older than that whose webhook
deliveries and email are done (none still pending) goes, with its deliveries and their attempts.
Without it the events table would grow by every balance crossing of every account forever."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from notifications.models import EmailDelivery, Event, WebhookDelivery

PURGE_BATCH = 2000


def events_purge(*, now: datetime | None = None, batch: int = PURGE_BATCH) -> int:
    """Delete the events past retention that are done, a batch per transaction (no statement
    holds its locks for long). Returns how many went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.NOTIFICATION_RETENTION_DAYS)
    done = (
        Event.objects.filter(created_at__lt=cutoff, dispatched_at__isnull=False)
        .exclude(webhook_deliveries__status=WebhookDelivery.Status.PENDING)
        .exclude(email__status=EmailDelivery.Status.PENDING)
    )
    purged = 0
    while ids := list(done.order_by("id").values_list("pk", flat=True)[:batch]):
        with transaction.atomic():
            # The candidates' deliveries and emails locked, the events still done are read again:
            # an operator's resend committed meanwhile is seen, and one not yet made waits for
            # this transaction (and then finds its delivery gone with its event).
            list(WebhookDelivery.objects.select_for_update().filter(event_id__in=ids).values_list("pk", flat=True))
            list(EmailDelivery.objects.select_for_update().filter(event_id__in=ids).values_list("pk", flat=True))
            ids = list(done.filter(pk__in=ids).values_list("pk", flat=True))
            WebhookDelivery.objects.filter(event_id__in=ids).delete()  # their attempts cascade
            EmailDelivery.objects.filter(event_id__in=ids).delete()
            Event.objects.filter(pk__in=ids).delete()
        purged += len(ids)
    return purged
