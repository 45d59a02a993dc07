"""Auto-recharge end to end against localstripe: a card saved through a SetupIntent, an
off-session PaymentIntent per crossing of the threshold, the credits granted by the payment's
webhook delivered to our running server, the monthly cap, and failures switching it off."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing.models import Grant, Purchase
from billing.services.ledger import debit_create
from notifications.models import AutoRecharge, Event, Recharge
from notifications.services.outbox import outbox_sweep
from notifications.services.recharge import recharge_charge
from tests.billing.factories import STAFF, give
from tests.billing.stripe_support import SECRET_KEY
from tests.billing.test_stripe_localstripe import register_webhook
from tests.concurrency import run_concurrently

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEADLINE_SECONDS = 20
PACK = "credits-115"


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)  # polling localstripe's delivery, another process
    raise AssertionError(f"timed out waiting for {what}")


def stripe_js(base: str) -> stripe.StripeClient:
    """What Stripe.js does in the browser (confirmCardSetup), through the official library."""
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": base}, max_network_retries=0)


@pytest.fixture
def deliver_to_us(localstripe, live_server) -> str:
    register_webhook(localstripe, f"{live_server.url}/stripe/webhook")
    return localstripe


def save_card(api, base: str, payment_method: str) -> dict:  # type: ignore[no-untyped-def]
    started = api.post("/me/auto-recharge/setup-intent", idem=None)
    assert started.status_code == 201, started.content
    intent = started.json()
    assert intent["id"].startswith("seti_") and intent["client_secret"].startswith(intent["id"])
    stripe_js(base).v1.setup_intents.confirm(intent["id"], {"payment_method": payment_method})
    saved = api.post("/me/auto-recharge/card", {"setup_intent": intent["id"]}, idem=None)
    assert saved.status_code == 200, saved.content
    return saved.json()


def switch_on(api, *, threshold: int = 10, cap_cents: int = 3000) -> dict:  # type: ignore[no-untyped-def]
    body = {"pack": PACK, "threshold_credits": threshold, "monthly_cap_cents": cap_cents}
    response = api.client.put(
        "/api/v1/me/auto-recharge", body, content_type="application/json", headers=api._headers(None, None)
    )
    assert response.status_code == 200, response.content
    return response.json()


def spend(account, credits: int) -> None:  # type: ignore[no-untyped-def]
    debit_create(account=account, credits=credits, actor=STAFF, reference="generation")


def charge_queued() -> list[Recharge]:
    """What beat and the worker do: the sweep finds the queued recharges, each is charged."""
    _, queued = outbox_sweep()
    return [r for r in (recharge_charge(recharge_id=pk) for pk in queued) if r is not None]


def events(account, kind: str) -> list[Event]:  # type: ignore[no-untyped-def]
    return list(Event.objects.filter(account=account, type=kind).order_by("id"))


def test_a_saved_visa_recharges_115_credits_once_when_a_spend_crosses_the_threshold(deliver_to_us, buyer):
    api, account = buyer
    refused = api.client.put(
        "/api/v1/me/auto-recharge",
        {"pack": PACK, "threshold_credits": 10, "monthly_cap_cents": 3000},
        content_type="application/json",
        headers=api._headers(None, None),
    )
    assert refused.status_code == 400 and "card" in refused.json()["error"]["fields"]

    card = save_card(api, deliver_to_us, "pm_card_visa")
    assert card["card"] == {"brand": "visa", "last4": "4242"} and card["enabled"] is False
    settings_row = switch_on(api)
    assert settings_row["enabled"] is True and settings_row["pack"] == PACK

    give(account, 12)
    spend(account, 2)  # 10: not below
    assert Recharge.objects.count() == 0
    spend(account, 3)  # 7: below: one recharge queued in the debit's transaction
    (queued,) = Recharge.objects.filter(account=account)
    assert queued.status == "queued"
    assert AutoRecharge.objects.get(account=account).state == "queued"
    spend(account, 1)  # still below: nothing more
    assert Recharge.objects.count() == 1

    (charging,) = charge_queued()
    assert charging.status == "charging" and charging.quantity == 1 and charging.amount_cents == 1500
    purchase = Purchase.objects.get(pk=charging.purchase_id)
    intent = stripe_js(deliver_to_us).v1.payment_intents.retrieve(purchase.stripe_payment_intent_id)
    assert intent.status == "succeeded" and intent.amount == 1500
    assert intent.metadata["purchase"] == purchase.public_id

    wait_for(lambda: Recharge.objects.filter(pk=charging.pk, status="succeeded").exists(), "the recharge to succeed")
    account.refresh_from_db()
    assert account.available_credits == 6 + 115
    (grant,) = Grant.objects.filter(account=account, source="purchase")
    assert grant.amount == 115
    assert AutoRecharge.objects.get(account=account).state == "idle"
    (succeeded,) = events(account, "auto_recharge.succeeded")
    assert succeeded.data["credits"] == 115 and succeeded.data["recharge"] == charging.public_id
    assert len(events(account, "purchase.paid")) == 1
    assert charge_queued() == []  # nothing left to charge


def test_enough_packs_are_bought_in_one_charge_to_get_back_to_the_threshold(deliver_to_us, buyer):
    api, account = buyer
    save_card(api, deliver_to_us, "pm_card_visa")
    switch_on(api, threshold=300, cap_cents=10_000)
    give(account, 300)
    spend(account, 299)  # 1 left: 299 short of 300 -> three packs of 115
    (charging,) = charge_queued()
    assert (charging.quantity, charging.amount_cents) == (3, 4500)
    wait_for(lambda: Recharge.objects.filter(pk=charging.pk, status="succeeded").exists(), "the recharge")
    account.refresh_from_db()
    assert account.available_credits == 1 + 345


def test_32_concurrent_spends_crossing_the_threshold_make_one_charge(deliver_to_us, buyer):
    api, account = buyer
    save_card(api, deliver_to_us, "pm_card_visa")
    switch_on(api, threshold=10)
    give(account, 40)
    run_concurrently(32, lambda i: spend(account, 1))
    account.refresh_from_db()
    assert account.available_credits == 8
    assert Recharge.objects.filter(account=account).count() == 1
    charge_queued()
    listed = stripe_js(deliver_to_us).v1.payment_intents.list({"limit": 100}).auto_paging_iter()
    ours = [pi for pi in listed if pi.to_dict()["metadata"].get("account") == account.public_id]
    assert len(ours) == 1 and ours[0].amount == 1500


def test_the_monthly_cap_stops_the_next_recharge(deliver_to_us, buyer):
    api, account = buyer
    save_card(api, deliver_to_us, "pm_card_visa")
    switch_on(api, threshold=10, cap_cents=1500)
    give(account, 10)
    spend(account, 1)
    (first,) = charge_queued()
    wait_for(lambda: Recharge.objects.filter(pk=first.pk, status="succeeded").exists(), "the first recharge")
    spend(account, 120)  # 124 -> 4: crosses again
    (second,) = charge_queued()
    assert second.status == "skipped" and second.error == "monthly cap reached" and second.purchase_id is None
    (failed,) = events(account, "auto_recharge.failed")
    assert failed.data["reason"] == "monthly cap reached" and failed.data["auto_recharge_disabled"] is False
    assert Purchase.objects.filter(account=account).count() == 1
    assert api.get("/me/auto-recharge").json()["spent_this_month_cents"] == 1500


def test_a_card_that_fails_raises_auto_recharge_failed_and_three_in_a_row_switch_it_off(deliver_to_us, buyer):
    api, account = buyer
    save_card(api, deliver_to_us, "pm_card_chargeCustomerFail")
    switch_on(api, threshold=10)
    give(account, 10)
    for attempt in (1, 2, 3):
        spend(account, 1)  # crosses below 10
        (failed,) = charge_queued()
        assert failed.status == "failed" and "declined" in failed.error
        assert Purchase.objects.get(pk=failed.purchase_id).status == "canceled"
        give(account, 1)  # back at 10 for the next crossing
        assert len(events(account, "auto_recharge.failed")) == attempt
    data = [e.data for e in events(account, "auto_recharge.failed")]
    assert [d["consecutive_failures"] for d in data] == [1, 2, 3]
    assert [d["auto_recharge_disabled"] for d in data] == [False, False, True]
    state = api.get("/me/auto-recharge").json()
    assert state["enabled"] is False and "3 failed charges in a row" in state["disabled_reason"]
    spend(account, 1)  # switched off: no recharge however low it goes
    assert Recharge.objects.filter(account=account).count() == 3
    assert Grant.objects.filter(account=account, source="purchase").count() == 0
