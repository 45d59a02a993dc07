"""The webhook under abuse: forged, stale, malformed, unknown and concurrent deliveries.

Never a double grant, never a 500, and nothing stored for a request not signed by Stripe.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from django.conf import settings
from django.test import Client

from billing.models import Grant, Purchase, StripeEvent
from tests.billing.stripe_support import (
    WEBHOOK_SECRET,
    event,
    intent_object,
    pending_purchase,
    post_webhook,
    session_object,
    sign,
)
from tests.concurrency import run_concurrently

pytestmark = pytest.mark.django_db


def assert_refused(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert StripeEvent.objects.count() == 0  # nothing stored


@pytest.fixture
def payment(stripe_keys, pack) -> tuple[Purchase, dict]:
    purchase = pending_purchase(pack)
    return purchase, event("payment_intent.succeeded", intent_object(purchase))


@pytest.mark.parametrize(
    "header",
    [
        None,  # missing
        "",
        "garbage",
        "t=notanumber,v1=abc",
        "t=1700000000",  # no signature
        "v1=" + "0" * 64,  # no timestamp
        "t=99999999999999999999999999,v1=00",
    ],
)
def test_a_missing_or_unreadable_signature_is_refused_and_nothing_is_stored(payment, header):
    _, payload = payment
    assert_refused(post_webhook(Client(), payload, header=header), 400, "invalid_signature")


def test_a_signature_made_with_another_secret_is_refused(payment):
    _, payload = payment
    assert_refused(post_webhook(Client(), payload, secret="whsec_someone_else"), 400, "invalid_signature")


def test_a_signature_over_another_body_is_refused(payment):
    purchase, payload = payment
    header = sign(json.dumps(payload))
    tampered = json.dumps({**payload, "id": "evt_tampered"})
    assert_refused(post_webhook(Client(), tampered, header=header), 400, "invalid_signature")
    assert Purchase.objects.get(pk=purchase.pk).status == "pending"


def test_a_stale_timestamp_is_refused_even_with_a_correct_signature(payment):
    _, payload = payment
    stale = int(time.time()) - settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS - 5
    assert_refused(post_webhook(Client(), payload, timestamp=stale), 400, "invalid_signature")


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2, 3]",
        '"just a string"',
        "{}",
        json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}),  # no data.object
        json.dumps({"id": 12, "type": "x", "data": {"object": {}}}),
        json.dumps({"id": "not_an_event_id", "type": "x", "data": {"object": {}}}),
        json.dumps({"id": "evt_1", "type": "", "data": {"object": {}}}),
        json.dumps({"id": "evt_nul", "type": "x", "data": {"object": {"name": "a\u0000b"}}}),
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_a_signed_body_that_is_not_an_event_is_a_400_and_nothing_is_stored(stripe_keys, body):
    response = post_webhook(Client(), body)
    assert response.status_code in (400, 413), response.content
    assert response.json()["error"]["code"] in ("validation_error", "request_too_large")
    assert StripeEvent.objects.count() == 0


def test_a_body_that_is_not_utf8_is_refused(stripe_keys):
    response = Client().post(
        "/stripe/webhook", b"\xff\xfe\x00", content_type="application/json", headers={"Stripe-Signature": "t=1,v1=0"}
    )
    assert_refused(response, 400, "invalid_signature")


def test_without_a_webhook_secret_events_are_refused_as_unavailable(payment, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    _, payload = payment
    assert_refused(post_webhook(Client(), payload, secret=WEBHOOK_SECRET), 503, "payments_unavailable")


def test_only_post_is_allowed(stripe_keys):
    response = Client().get("/stripe/webhook")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_an_unknown_event_type_is_stored_and_acknowledged(stripe_keys):
    payload = event("customer.created", {"id": "cus_1", "object": "customer"})
    response = post_webhook(Client(), payload)
    assert response.status_code == 200
    stored = StripeEvent.objects.get()
    assert (stored.type, stored.status, stored.payload) == ("customer.created", "ignored", payload)


@pytest.mark.parametrize(
    "obj",
    [
        {"id": "pi_not_ours", "object": "payment_intent", "amount": 1500, "currency": "usd", "metadata": {}},
        {"id": "pi_x", "object": "payment_intent", "metadata": {"purchase": "pur_doesnotexist"}},
        {"id": "pi_y", "object": "payment_intent", "metadata": "not a dict"},
        {"object": "payment_intent"},
    ],
)
def test_an_event_for_no_purchase_of_ours_is_stored_and_acknowledged(stripe_keys, obj):
    response = post_webhook(Client(), event("payment_intent.succeeded", obj))
    assert response.status_code == 200
    assert StripeEvent.objects.get().status == "ignored"
    assert Grant.objects.count() == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"amount_received": "1500"},
        {"amount_received": None, "amount": None},
        {"amount_received": 1500.0},
        {"currency": "eur"},
        {"latest_charge": {"no": "id"}},
    ],
)
def test_odd_field_types_in_a_signed_event_never_grant_wrongly_and_never_500(payment, overrides):
    purchase, _ = payment
    obj = {**intent_object(purchase), **overrides}
    response = post_webhook(Client(), event("payment_intent.succeeded", obj))
    assert response.status_code == 200
    stored = StripeEvent.objects.get()
    purchase.refresh_from_db()
    if purchase.status == "paid":  # only a well-formed payment of the right amount grants
        assert overrides == {"latest_charge": {"no": "id"}}
    else:
        assert stored.status == "failed" and stored.error
        assert Grant.objects.count() == 0


def test_a_duplicate_is_acknowledged_without_processing_again(payment):
    purchase, payload = payment
    first = post_webhook(Client(), payload)
    again = post_webhook(Client(), payload)
    assert first.json()["status"] == "processed"
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert StripeEvent.objects.get().attempts == 1
    assert Grant.objects.filter(account=purchase.account).count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_ten_times_at_once_grants_once(payment, assert_ledger_clean):
    purchase, payload = payment
    body = json.dumps(payload)

    replies = run_concurrently(10, lambda i: post_webhook(Client(), body).json()["status"])

    assert Counter(replies) == {"processed": 1, "duplicate": 9}, replies
    assert StripeEvent.objects.count() == 1
    assert Grant.objects.filter(account=purchase.account).count() == 1
    purchase.refresh_from_db()
    assert purchase.status == "paid"
    assert_ledger_clean()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_different_events_for_one_payment_racing_each_other_grant_once(stripe_keys, pack, assert_ledger_clean):
    purchase = pending_purchase(pack, flow="checkout")
    session = session_object(purchase)
    intent = intent_object(purchase, id=session["payment_intent"])
    payloads = [
        json.dumps(event(kind, obj))
        for kind, obj in [
            ("checkout.session.completed", session),
            ("checkout.session.async_payment_succeeded", session),
            ("payment_intent.succeeded", intent),
        ]
        for _ in range(3)
    ]

    replies = run_concurrently(len(payloads), lambda i: post_webhook(Client(), payloads[i]).status_code)

    assert replies == [200] * len(payloads)
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"processed"}
    assert Grant.objects.filter(account=purchase.account).count() == 1
    assert_ledger_clean()


def test_a_timestamp_too_far_in_the_future_is_refused_even_with_a_correct_signature(payment):
    purchase, payload = payment
    ahead = int(time.time()) + settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS + 5
    assert_refused(post_webhook(Client(), payload, timestamp=ahead), 400, "invalid_signature")
    assert Purchase.objects.get(pk=purchase.pk).status == "pending"
    # A clock a little ahead, within the tolerance, is Stripe's and ours drifting: accepted.
    slightly = int(time.time()) + settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS - 30
    assert post_webhook(Client(), payload, timestamp=slightly).status_code == 200
