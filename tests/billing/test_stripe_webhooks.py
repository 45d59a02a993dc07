"""Stripe events our webhook handles, each shaped as in Stripe's API reference and signed with
Stripe's scheme: payments grant exactly once, refunds and disputes claw back the unspent share."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client

from billing.models import Grant, LedgerEntry, Purchase, StripeEvent
from billing.services.ledger import debit_create
from tests.billing.factories import STAFF
from tests.billing.stripe_support import (
    charge_object,
    dispute_object,
    event,
    intent_object,
    pending_purchase,
    post_webhook,
    session_object,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(stripe_keys):  # type: ignore[no-untyped-def]
    client = Client()

    def deliver(event_type: str, obj: dict) -> StripeEvent:
        payload = event(event_type, obj)
        response = post_webhook(client, payload)
        assert response.status_code == 200, response.content
        assert response.json()["event"] == payload["id"]
        return StripeEvent.objects.get(stripe_event_id=payload["id"])

    return deliver


def grants_of(purchase: Purchase) -> list[Grant]:
    return list(Grant.objects.filter(account=purchase.account, source=Grant.Source.PURCHASE))


def paid(purchase: Purchase, send) -> Purchase:  # type: ignore[no-untyped-def]
    send("payment_intent.succeeded", intent_object(purchase))
    purchase.refresh_from_db()
    assert purchase.status == "paid"
    return purchase


# --- Checkout ----------------------------------------------------------------------------------


def test_a_paid_checkout_session_grants_the_pack_for_twelve_calendar_months(send, pack, assert_ledger_clean):
    purchase = pending_purchase(pack, flow="checkout")
    with time_machine.travel(datetime(2026, 2, 28, 15, 30, tzinfo=UTC), tick=False):
        stored = send("checkout.session.completed", session_object(purchase))

    assert (stored.status, stored.purchase_id, stored.type) == ("processed", purchase.pk, "checkout.session.completed")
    assert stored.payload["data"]["object"]["id"] == purchase.stripe_checkout_session_id  # the raw event, as sent
    purchase.refresh_from_db()
    assert purchase.status == "paid"
    assert purchase.paid_at == datetime(2026, 2, 28, 15, 30, tzinfo=UTC)
    assert purchase.expires_at == datetime(2027, 2, 28, 15, 30, tzinfo=UTC)
    (grant,) = grants_of(purchase)
    assert (grant.amount, grant.remaining, grant.expires_at) == (115, 115, purchase.expires_at)
    assert purchase.grant_id == grant.pk
    assert purchase.stripe_payment_intent_id  # learnt from the session
    purchase.account.refresh_from_db()
    assert purchase.account.available_credits == 115
    assert_ledger_clean()


def test_a_completed_session_still_awaiting_a_delayed_payment_grants_only_when_it_succeeds(send, pack):
    purchase = pending_purchase(pack, flow="checkout")
    session = session_object(purchase)
    send("checkout.session.completed", {**session, "payment_status": "unpaid"})
    purchase.refresh_from_db()
    assert purchase.status == "pending" and grants_of(purchase) == []

    send("checkout.session.async_payment_succeeded", session)
    purchase.refresh_from_db()
    assert purchase.status == "paid" and len(grants_of(purchase)) == 1


@pytest.mark.parametrize(
    "event_type, session_status",
    [("checkout.session.async_payment_failed", "complete"), ("checkout.session.expired", "expired")],
)
def test_a_session_that_will_never_be_paid_cancels_the_purchase(send, pack, event_type, session_status):
    purchase = pending_purchase(pack, flow="checkout")
    stored = send(event_type, session_object(purchase, status=session_status, payment_status="unpaid"))
    purchase.refresh_from_db()
    assert stored.status == "processed"
    assert purchase.status == "canceled" and grants_of(purchase) == []


def test_the_session_and_its_payment_intent_both_reporting_the_payment_grant_once(send, pack, assert_ledger_clean):
    purchase = pending_purchase(pack, flow="checkout")
    session = session_object(purchase)
    intent = intent_object(purchase, id=session["payment_intent"])
    # Out of order: the PaymentIntent's event first (it names our purchase in its metadata).
    first = send("payment_intent.succeeded", intent)
    second = send("checkout.session.completed", session)
    third = send("checkout.session.async_payment_succeeded", session)

    assert "granted 115" in first.error
    assert all("already paid" in e.error for e in (second, third)), (second.error, third.error)
    assert len(grants_of(purchase)) == 1
    assert LedgerEntry.objects.filter(account=purchase.account, kind="grant").count() == 1
    assert_ledger_clean()


def test_a_payment_after_the_session_expired_is_still_granted(send, pack):
    """Money taken is credits owed: a late success beats an earlier cancellation."""
    purchase = pending_purchase(pack, flow="checkout")
    session = session_object(purchase)
    send("checkout.session.expired", {**session, "status": "expired", "payment_status": "unpaid"})
    send("checkout.session.completed", session)
    purchase.refresh_from_db()
    assert purchase.status == "paid" and len(grants_of(purchase)) == 1


# --- PaymentIntents ------------------------------------------------------------------------------


def test_a_failed_payment_attempt_keeps_the_purchase_pending_for_another_card(send, pack):
    purchase = pending_purchase(pack)
    failure = {"code": "card_declined", "message": "Your card was declined."}
    send(
        "payment_intent.payment_failed",
        intent_object(purchase, status="requires_payment_method", last_payment_error=failure),
    )
    purchase.refresh_from_db()
    assert (purchase.status, purchase.last_error) == ("pending", "Your card was declined.")
    assert grants_of(purchase) == []
    paid(purchase, send)


def test_a_canceled_payment_intent_cancels_the_purchase(send, pack):
    purchase = pending_purchase(pack)
    send("payment_intent.canceled", intent_object(purchase, status="canceled"))
    purchase.refresh_from_db()
    assert purchase.status == "canceled"


def test_an_amount_that_does_not_match_the_purchase_grants_nothing_and_is_recorded(send, pack):
    purchase = pending_purchase(pack)
    stored = send("payment_intent.succeeded", intent_object(purchase, amount=100, amount_received=100))
    assert stored.status == "failed"
    assert "expected 1500 usd" in stored.error
    purchase.refresh_from_db()
    assert purchase.status == "pending" and grants_of(purchase) == []


# --- Refunds -------------------------------------------------------------------------------------


def test_a_partial_refund_claws_back_a_proportional_share_rounded_in_the_customers_favour(
    send, pack, assert_ledger_clean
):
    purchase = paid(pending_purchase(pack), send)
    send("charge.refunded", charge_object(purchase, amount_refunded=750))
    purchase.refresh_from_db()
    # 115 * 750 / 1500 = 57.5: the half credit stays with the customer.
    assert (purchase.status, purchase.refunded_cents, purchase.clawed_back_credits) == ("partially_refunded", 750, 57)
    grant = Grant.objects.get(pk=purchase.grant_id)
    assert grant.remaining == 58
    assert purchase.stripe_charge_id  # learnt from the charge

    # The rest refunded later: Stripe's running total, so the event carries 1500.
    send("charge.refunded", charge_object(purchase, amount_refunded=1500))
    purchase.refresh_from_db()
    grant.refresh_from_db()
    assert (purchase.status, purchase.clawed_back_credits, grant.remaining) == ("refunded", 115, 0)
    assert_ledger_clean()


def test_credits_already_spent_are_recorded_as_unrecoverable(send, pack, assert_ledger_clean):
    purchase = paid(pending_purchase(pack), send)
    debit_create(account=purchase.account, credits=100, actor=STAFF, reference="generation")
    send("charge.refunded", charge_object(purchase, amount_refunded=1500))
    purchase.refresh_from_db()
    assert (purchase.clawed_back_credits, purchase.unrecoverable_credits) == (15, 100)
    entry = LedgerEntry.objects.get(kind="clawback")
    assert (entry.credits, entry.grant_id, entry.reference, entry.actor_id) == (
        -15,
        purchase.grant_id,
        purchase.public_id,
        "stripe",
    )
    purchase.account.refresh_from_db()
    assert purchase.account.available_credits == 0
    assert_ledger_clean()


def test_a_refund_event_records_the_charge_it_names(send, pack, assert_ledger_clean):
    purchase = paid(pending_purchase(pack), send)
    Purchase.objects.filter(pk=purchase.pk).update(stripe_charge_id=None)  # as a Checkout payment may leave it
    purchase.refresh_from_db()
    charge = charge_object(purchase, amount_refunded=1500)
    send("charge.refunded", charge)
    purchase.refresh_from_db()
    assert (purchase.stripe_charge_id, purchase.status) == (charge["id"], "refunded")
    assert_ledger_clean()


def test_a_repeated_or_stale_refund_event_claws_back_nothing_more(send, pack, assert_ledger_clean):
    purchase = paid(pending_purchase(pack), send)
    send("charge.refunded", charge_object(purchase, amount_refunded=1000))
    send("charge.refunded", charge_object(purchase, amount_refunded=1000))
    send("charge.refunded", charge_object(purchase, amount_refunded=500))  # an older event, late
    purchase.refresh_from_db()
    assert (purchase.refunded_cents, purchase.clawed_back_credits) == (1000, 76)  # 115 * 1000 / 1500 = 76.67
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert_ledger_clean()


def test_a_refund_that_overtakes_the_payment_event_grants_then_claws_back(send, pack, assert_ledger_clean):
    purchase = pending_purchase(pack)
    send("charge.refunded", charge_object(purchase, amount_refunded=1500))
    purchase.refresh_from_db()
    assert (purchase.status, purchase.clawed_back_credits) == ("refunded", 115)

    late = send("payment_intent.succeeded", intent_object(purchase))
    assert "already refunded" in late.error
    assert len(grants_of(purchase)) == 1
    purchase.account.refresh_from_db()
    assert purchase.account.available_credits == 0
    assert_ledger_clean()


# --- Disputes ------------------------------------------------------------------------------------


def test_a_won_dispute_restores_the_purchase(send, pack):
    purchase = paid(pending_purchase(pack, stripe_charge_id="ch_disputed_won"), send)
    send("charge.dispute.created", dispute_object(purchase, status="needs_response"))
    purchase.refresh_from_db()
    assert purchase.status == "disputed"

    send("charge.dispute.closed", dispute_object(purchase, status="won"))
    purchase.refresh_from_db()
    assert (purchase.status, purchase.clawed_back_credits, purchase.flagged_for_review) == ("paid", 0, False)
    assert Grant.objects.get(pk=purchase.grant_id).remaining == 115


def test_a_lost_dispute_claws_back_the_unspent_credits_and_flags_the_purchase(send, pack, assert_ledger_clean):
    purchase = paid(pending_purchase(pack, stripe_charge_id="ch_disputed_lost"), send)
    debit_create(account=purchase.account, credits=40, actor=STAFF, reference="generation")
    send("charge.dispute.created", dispute_object(purchase, status="needs_response"))
    send("charge.dispute.closed", dispute_object(purchase, status="lost"))
    send("charge.dispute.closed", dispute_object(purchase, status="lost"))  # delivered twice

    purchase.refresh_from_db()
    assert purchase.status == "disputed" and purchase.flagged_for_review is True
    assert (purchase.disputed_cents, purchase.clawed_back_credits, purchase.unrecoverable_credits) == (1500, 75, 40)
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert_ledger_clean()


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_dispute_opening_delivered_after_its_closing_changes_nothing(send, pack, outcome, assert_ledger_clean):
    purchase = paid(pending_purchase(pack, stripe_charge_id=f"ch_late_{outcome}"), send)
    dispute = dispute_object(purchase, status=outcome)
    send("charge.dispute.closed", dispute)
    purchase.refresh_from_db()
    after_closing = (purchase.status, purchase.clawed_back_credits, purchase.flagged_for_review)

    late = send("charge.dispute.created", {**dispute, "status": "needs_response"})
    purchase.refresh_from_db()
    assert (purchase.status, purchase.clawed_back_credits, purchase.flagged_for_review) == after_closing
    assert after_closing == (("paid", 0, False) if outcome == "won" else ("disputed", 115, True))
    assert late.status == "processed" and late.purchase_id == purchase.pk
    # Another dispute of the same purchase still opens.
    send("charge.dispute.created", dispute_object(purchase, status="needs_response"))
    purchase.refresh_from_db()
    assert purchase.status == "disputed"
    assert_ledger_clean()


def test_a_dispute_found_by_its_charge_when_the_event_names_no_payment_intent(send, pack):
    purchase = paid(pending_purchase(pack), send)
    dispute = dispute_object(purchase, status="needs_response")
    dispute["payment_intent"] = None
    dispute["charge"] = purchase.stripe_charge_id
    stored = send("charge.dispute.created", dispute)
    assert stored.purchase_id == purchase.pk and stored.status == "processed"


def test_a_dispute_of_a_purchase_never_paid_is_recorded_as_failed_for_operators(send, pack):
    purchase = pending_purchase(pack, stripe_charge_id="ch_never_paid")
    stored = send("charge.dispute.created", dispute_object(purchase, status="needs_response"))
    assert stored.status == "failed" and "has not been paid" in stored.error
    purchase.refresh_from_db()
    assert purchase.status == "pending"
