"""Outbound webhooks: endpoints registered by the generation service, events POSTed to a real HTTP
receiver signed as Stripe signs, and a failing receiver retried with backoff as time moves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import stripe
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from billing.services.ledger import debit_create
from console.roles import FINANCE, SUPPORT
from notifications.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from notifications.services.outbox import outbox_sweep
from notifications.services.webhooks import deliveries_due, delivery_attempt, retry_delay
from tests.billing.factories import STAFF, give, make_account
from tests.console.conftest import logged_in, operator
from tests.notifications.receiver import webhook_receiver

pytestmark = pytest.mark.django_db

START = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)


def register(api, url: str, **body):  # type: ignore[no-untyped-def]
    return api.post("/webhook-endpoints", {"url": url, **body}, idem=None)


def low_balance_event(now: datetime) -> Event:
    account = make_account(now=now)
    give(account, 10, now=now)
    debit_create(account=account, credits=1, actor=STAFF, reference="gen", now=now)
    return Event.objects.get(account=account, type="balance.low")


def test_an_event_reaches_the_receiver_signed_as_stripe_signs(api, loopback_webhooks):
    with webhook_receiver() as receiver, time_machine.travel(START, tick=False):
        created = register(api, receiver.url, description="generation service")
        assert created.status_code == 201, created.content
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        event = low_balance_event(START)

        assert outbox_sweep(now=START) == (1, [])
        (delivery,) = WebhookDelivery.objects.filter(event=event)
        attempt = delivery_attempt(delivery_id=delivery.pk, now=START)

    assert attempt is not None and attempt.succeeded and attempt.status_code == 200
    (got,) = receiver.received
    header = got.headers["Webhook-Signature"]
    assert header.startswith(f"t={int(START.timestamp())},v1=")
    # The official Stripe library accepts our signature with the endpoint's secret...
    stripe.WebhookSignature.verify_header(got.body.decode(), header, secret, tolerance=None)
    # ...and refuses it with any other secret or a changed body.
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(got.body.decode(), header, "whsec_other", tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(got.body.decode() + " ", header, secret, tolerance=None)
    body = json.loads(got.body)
    assert body == {
        "id": event.public_id,
        "type": "balance.low",
        "created": "2031-03-10T12:00:00Z",
        "account": event.account.public_id,
        "data": {"available": 9, "held": 0, "threshold": 10},
    }
    assert got.headers["Webhook-Id"] == event.public_id
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)
    assert outbox_sweep(now=START) == (0, [])  # fanned out once
    assert delivery_attempt(delivery_id=delivery.pk, now=START) is None  # delivered once


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_is_logged(api, loopback_webhooks):
    with webhook_receiver() as receiver:
        receiver.answers = [500, 500, 503]
        with time_machine.travel(START, tick=False):
            assert register(api, receiver.url).status_code == 201
            event = low_balance_event(START)
            outbox_sweep(now=START)
            delivery = WebhookDelivery.objects.get(event=event)
            assert deliveries_due(now=START) == [delivery.pk]
            delivery_attempt(delivery_id=delivery.pk, now=START)

        moments = [START]
        for failures in (1, 2, 3):
            delivery.refresh_from_db()
            assert delivery.status == "pending" and delivery.attempts == failures
            assert delivery.next_attempt_at == moments[-1] + retry_delay(failures)
            early = delivery.next_attempt_at - timedelta(seconds=1)
            with time_machine.travel(early, tick=False):
                assert deliveries_due(now=early) == []  # not before its backoff is over
                assert delivery_attempt(delivery_id=delivery.pk, now=early) is None
            moments.append(delivery.next_attempt_at)
            with time_machine.travel(moments[-1], tick=False):
                assert deliveries_due(now=moments[-1]) == [delivery.pk]
                delivery_attempt(delivery_id=delivery.pk, now=moments[-1])

    assert [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2)] == [
        b - a for a, b in zip(moments, moments[1:], strict=False)
    ]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 4)
    log = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("attempted_at"))
    assert [(a.status_code, a.succeeded) for a in log] == [(500, False), (500, False), (503, False), (200, True)]
    assert log[0].error == "receiver says no" and all(a.latency_ms >= 0 for a in log)
    assert [a.attempted_at for a in log] == moments
    assert len(receiver.received) == 4 and len({r.body for r in receiver.received}) == 1


def test_a_delivery_that_fails_for_three_days_is_given_up(api, loopback_webhooks):
    with webhook_receiver() as receiver:
        receiver.answers = [500] * 100
        with time_machine.travel(START, tick=False):
            assert register(api, receiver.url).status_code == 201
            event = low_balance_event(START)
            outbox_sweep(now=START)
        delivery = WebhookDelivery.objects.get(event=event)
        now = START
        while delivery.status == "pending":
            now = delivery.next_attempt_at
            with time_machine.travel(now, tick=False):
                delivery_attempt(delivery_id=delivery.pk, now=now)
            delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.completed_at == now
    assert START + timedelta(hours=66) < now <= START + timedelta(hours=72)
    assert delivery.attempts == len(receiver.received) == WebhookAttempt.objects.filter(delivery=delivery).count()
    assert 15 <= delivery.attempts <= 25  # exponential, capped at 6 hours between attempts


def delivered(api, receiver) -> WebhookDelivery:  # type: ignore[no-untyped-def]
    """A balance.low event delivered once to the receiver, registered as an endpoint."""
    with time_machine.travel(START, tick=False):
        assert register(api, receiver.url).status_code == 201
        event = low_balance_event(START)
        outbox_sweep(now=START)
        delivery = WebhookDelivery.objects.get(event=event)
        delivery_attempt(delivery_id=delivery.pk, now=START)
    return delivery


def test_an_operator_resends_a_delivery_from_the_admin(api, loopback_webhooks):
    with webhook_receiver() as receiver:
        delivery = delivered(api, receiver)
        operator = Client()
        operator.force_login(get_user_model().objects.create_superuser(email="ops@example.com", password="x" * 12))
        page = operator.get(reverse("admin:notifications_webhookdelivery_change", args=[delivery.pk]))
        assert page.status_code == 200 and b"succeeded" in page.content
        answer = operator.post(
            reverse("admin:notifications_webhookdelivery_changelist"),
            {"action": "resend", "_selected_action": [delivery.pk]},
        )
        assert answer.status_code == 302
        delivery.refresh_from_db()
        assert delivery.status == "pending"
        later = delivery.next_attempt_at
        with time_machine.travel(later, tick=False):
            delivery_attempt(delivery_id=delivery.pk, now=later)
    assert len(receiver.received) == 2
    assert WebhookAttempt.objects.filter(delivery=delivery, succeeded=True).count() == 2


def test_only_an_operator_allowed_to_resend_can_resend(api, loopback_webhooks):
    """Seeing deliveries (every operator role) is not enough: support's role resends, finance's does not."""
    with webhook_receiver() as receiver:
        delivery = delivered(api, receiver)
    changelist = reverse("admin:notifications_webhookdelivery_changelist")
    resend = {"action": "resend", "_selected_action": [delivery.pk]}
    finance = logged_in(operator("finance@example.com", role=FINANCE))
    support = logged_in(operator("support@example.com", role=SUPPORT))

    assert b"Resend the selected" not in finance.get(changelist).content
    finance.post(changelist, resend)
    delivery.refresh_from_db()
    assert delivery.status == "succeeded"

    assert b"Resend the selected" in support.get(changelist).content
    assert support.post(changelist, resend).status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    assert LogEntry.objects.get(object_id=str(delivery.pk)).change_message == "Resent."


def test_an_endpoint_gets_only_the_event_types_it_asked_for(api, loopback_webhooks):
    with webhook_receiver() as receiver:
        assert register(api, receiver.url, event_types=["purchase.paid"]).status_code == 201
        low_balance_event(START)
        outbox_sweep(now=START)
    assert WebhookDelivery.objects.count() == 0


def test_the_endpoints_list_never_shows_the_secret_and_delete_stops_deliveries(api, loopback_webhooks):
    created = register(api, "http://127.0.0.1:9/hooks").json()
    listed = api.get("/webhook-endpoints").json()["data"]
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]
    assert "secret" not in json.dumps(listed)
    response = api.client.delete(f"/api/v1/webhook-endpoints/{created['id']}", headers=api._headers(None, None))
    assert response.status_code == 204
    assert api.get("/webhook-endpoints").json()["data"] == []
    again = api.client.delete(f"/api/v1/webhook-endpoints/{created['id']}", headers=api._headers(None, None))
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    low_balance_event(START)
    outbox_sweep(now=START)
    assert WebhookDelivery.objects.count() == 0
    assert WebhookEndpoint.objects.get(public_id=created["id"]).deleted_at is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.example.com/x"}, "url"),  # https only by default
        ({"url": "https://127.0.0.1/x"}, "url"),  # loopback
        ({"url": "https://10.1.2.3/x"}, "url"),  # private
        ({"url": "https://169.254.169.254/latest"}, "url"),  # link-local (cloud metadata)
        ({"url": "https://[::1]/x"}, "url"),
        ({"url": "https://[::1"}, "url"),  # an unclosed bracket
        ({"url": "https://[zz]/x"}, "url"),  # brackets around no IPv6 address
        ({"url": "https://[93.184.216.34]/"}, "url"),  # brackets around an IPv4 address
        ({"url": "https://user:pw@93.184.216.34/x"}, "url"),
        ({"url": "ftp://93.184.216.34/x"}, "url"),
        ({"url": "https:///nohost"}, "url"),
        ({"url": "https://93.184.216.34:99999/x"}, "url"),
        ({"url": 42}, "url"),
        ({"url": "https://" + "a" * 2000 + ".com"}, "url"),
        ({}, "url"),
        ({"url": "https://93.184.216.34/x", "event_types": ["balance.nope"]}, "event_types"),
        ({"url": "https://93.184.216.34/x", "event_types": "balance.low"}, "event_types"),
        ({"url": "https://93.184.216.34/x", "secret": "mine"}, "secret"),
    ],
)
def test_bad_endpoints_are_refused_with_the_field_named(api, body, field):
    response = api.post("/webhook-endpoints", body, idem=None)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"], error
    assert WebhookEndpoint.objects.count() == 0


def test_a_public_https_address_is_accepted(api):
    response = register(api, "https://93.184.216.34/hooks")
    assert response.status_code == 201, response.content


def test_only_service_keys_manage_endpoints(user_api, anon):
    api, _ = user_api
    assert api.get("/webhook-endpoints").status_code == 403
    assert anon.get("/webhook-endpoints").status_code == 401


def test_a_host_that_now_resolves_to_a_private_address_is_not_sent_to(api, loopback_webhooks):
    """Checked at registration and again at each attempt: a name whose address changed since (a
    DNS record pointed at our own network) gets nothing, and the attempt says why."""
    with webhook_receiver() as receiver, time_machine.travel(START, tick=False):
        assert register(api, receiver.url).status_code == 201  # private addresses allowed here
        event = low_balance_event(START)
        outbox_sweep(now=START)
        (delivery,) = WebhookDelivery.objects.filter(event=event)
        loopback_webhooks.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = False  # as if the name now led to 127.0.0.1

        attempt = delivery_attempt(delivery_id=delivery.pk, now=START)

    assert receiver.received == []
    assert attempt is not None and not attempt.succeeded and attempt.status_code is None
    assert attempt.error == "not sent: The URL's host is a private or reserved address (127.0.0.1)."
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.next_attempt_at == START + retry_delay(1)


@pytest.mark.parametrize("endpoint_id", ["%00", "we_%00x", "we_a%2Fb", "we_" + "x" * 70])
def test_an_endpoint_id_no_endpoint_could_have_is_a_404(api, endpoint_id):
    api.client.raise_request_exception = False
    response = api.client.delete(f"/api/v1/webhook-endpoints/{endpoint_id}", headers=api._headers(None, None))
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "not_found"
