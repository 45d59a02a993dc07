"""The outbox delivered by a real Celery worker process through real Redis: beat's sweep task
finds the event the balance trigger wrote inside a debit, the worker fans it out, POSTs it signed
to a real HTTP receiver and sends the email (the console backend, in the worker's log)."""

from __future__ import annotations

import pytest
import stripe
from django.db import transaction

from billing.services.ledger import debit_create
from notifications.models import EmailDelivery, Event, WebhookDelivery
from notifications.services.webhooks import endpoint_create
from notifications.tasks import outbox_sweep
from tests.billing.factories import STAFF, give, make_account
from tests.billing.test_celery_integration import start_worker, wait_for  # noqa: F401 - the fixture
from tests.notifications.receiver import webhook_receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_real_worker_delivers_a_balance_event_by_webhook_and_email(start_worker, loopback_webhooks):  # noqa: F811
    with webhook_receiver() as receiver:
        receiver.answers = [500]  # the first attempt fails; the delivery waits for its backoff
        endpoint, secret = endpoint_create(url=receiver.url)
        with transaction.atomic():
            account = make_account()
            give(account, 10)
            debit_create(account=account, credits=2, actor=STAFF, reference="gen")
        event = Event.objects.get(account=account, type="balance.low")
        assert event.dispatched_at is None  # raised by the trigger: no Python queued it

        # The worker checks the endpoint's URL again before each attempt, with its own settings.
        loopback = {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}
        worker = start_worker(env={"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend", **loopback})
        outbox_sweep.delay()
        wait_for(lambda: receiver.received, what="a webhook POST", timeout=60, worker=worker)
        got = receiver.received[0]
        stripe.WebhookSignature.verify_header(
            got.body.decode(), got.headers["Webhook-Signature"], secret, tolerance=300
        )
        assert worker.received("notifications.outbox_sweep") and worker.received("notifications.deliver_webhook")
        wait_for(
            lambda: EmailDelivery.objects.filter(event=event, status="sent").exists(),
            what="the email sent",
            timeout=60,
            worker=worker,
        )
        assert "Subject: Your credits are running low" in worker.log.read_text()
        delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
        assert (delivery.status, delivery.attempts) == ("pending", 1) and delivery.last_error
        assert len(receiver.received) == 1
