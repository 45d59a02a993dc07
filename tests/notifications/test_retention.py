"""Old notification events go once they are done (nightly, notifications.purge_events): an event
past NOTIFICATION_RETENTION_DAYS with no delivery or email still pending is deleted with its
deliveries and attempts; recent ones, and old ones still being delivered, stay."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection, transaction

from notifications import tasks
from notifications.models import EmailDelivery, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from notifications.schedules import SCHEDULES
from notifications.services import retention
from notifications.services.retention import events_purge
from notifications.services.webhooks import delivery_resend
from tests.billing.factories import make_account

pytestmark = pytest.mark.django_db

NOW = datetime(2031, 6, 1, 4, 0, tzinfo=UTC)


def event(account, age_days: float, *, webhook: str | None = None, email: str | None = None) -> Event:  # type: ignore[no-untyped-def]
    made = NOW - timedelta(days=age_days)
    found = Event.objects.create(account=account, type="balance.low", created_at=made, dispatched_at=made)
    if webhook:
        endpoint = WebhookEndpoint.objects.create(url="https://example.com/hook", secret="whsec_x")
        delivery = WebhookDelivery.objects.create(event=found, endpoint=endpoint, status=webhook)
        WebhookAttempt.objects.create(delivery=delivery, attempted_at=made, succeeded=webhook == "succeeded")
    if email:
        EmailDelivery.objects.create(event=found, to="user@example.com", status=email)
    return found


def test_old_events_that_are_done_go_with_their_deliveries_and_the_rest_stay(settings):
    settings.NOTIFICATION_RETENTION_DAYS = 90
    account = make_account()
    gone = [
        event(account, 91, webhook="succeeded", email="sent"),
        event(account, 200, webhook="failed", email="failed"),
        event(account, 95),
    ]
    kept = [
        event(account, 89, webhook="succeeded", email="sent"),  # recent
        event(account, 91, webhook="pending"),  # still being retried
        event(account, 120, email="pending"),  # its email not sent yet
        Event.objects.create(account=account, type="balance.low", created_at=NOW - timedelta(days=100)),  # undispatched
    ]

    assert events_purge(now=NOW, batch=2) == len(gone)

    assert set(Event.objects.values_list("pk", flat=True)) == {e.pk for e in kept}
    assert not WebhookDelivery.objects.filter(event_id__in=[e.pk for e in gone]).exists()
    assert not EmailDelivery.objects.filter(event_id__in=[e.pk for e in gone]).exists()
    assert WebhookAttempt.objects.count() == 2  # those of the two kept events with deliveries
    assert events_purge(now=NOW) == 0


def test_the_purge_is_installed_in_beat_and_runs_the_task(settings):
    from django_celery_beat.models import PeriodicTask

    from notifications.tasks import purge_events

    (schedule,) = [s for s in SCHEDULES if s.task == "notifications.purge_events"]
    installed = PeriodicTask.objects.get(name=schedule.name)
    assert (installed.task, installed.crontab.hour, installed.crontab.minute) == (purge_events.name, "3", "50")
    settings.NOTIFICATION_RETENTION_DAYS = 7
    event(make_account(), 30, webhook="succeeded")
    with time_machine.travel(NOW, tick=False):
        assert purge_events.apply().get() == 1 and not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_delivery_resent_while_the_purge_runs_stays(settings, monkeypatch):
    settings.NOTIFICATION_RETENTION_DAYS = 90
    now = datetime(2031, 6, 1, 3, 50, tzinfo=UTC)
    made = now - timedelta(days=100)
    event = Event.objects.create(account=make_account(), type="balance.low", created_at=made, dispatched_at=made)
    endpoint = WebhookEndpoint.objects.create(url="https://example.com/hooks", secret="whsec_x")
    delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, status="failed")

    def operator_resends() -> None:  # in a session of its own, committed
        try:
            with transaction.atomic():
                delivery_resend(delivery=WebhookDelivery.objects.get(pk=delivery.pk), now=now)
        finally:
            connection.close()

    class ResendAsTheBatchStarts:  # after the purge has chosen its events, before it deletes
        def atomic(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            operator = threading.Thread(target=operator_resends)
            operator.start()
            operator.join()
            return transaction.atomic(*args, **kwargs)

    monkeypatch.setattr(retention, "transaction", ResendAsTheBatchStarts())
    monkeypatch.setattr(tasks.deliver_webhook, "delay", lambda delivery_id: None)
    assert events_purge(now=now) == 0
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"
    assert Event.objects.filter(pk=event.pk).exists()
