"""Charging a queued recharge, with Stripe answered at the stripe library's HTTP boundary (the
recording client): which month's cap a charge counts in, a charge whose answer was lost, and a
pack no longer sold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import stripe

from accounts.models import Account
from billing.models import CreditPack, Purchase, StripeCustomer
from billing.services import stripe_gateway
from billing.services.ledger import debit_create
from billing.services.purchases import StripeRefs, purchase_fulfil
from notifications.models import AutoRecharge, Event, Recharge
from notifications.services.recharge import (
    auto_recharge_configure,
    auto_recharge_disable,
    recharge_charge,
    recharges_unanswered_settle,
    spent_this_month_cents,
)
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import Recorded, RecordingHTTPClient, new_id

pytestmark = pytest.mark.django_db

START = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
INTENTS = "/v1/payment_intents"


def succeeded(request: Recorded) -> tuple[int, dict]:
    return 200, {"id": new_id("pi_"), "object": "payment_intent", "status": "succeeded"}


@pytest.fixture
def stripe_answers(recorder: RecordingHTTPClient) -> RecordingHTTPClient:
    recorder.on("post", INTENTS, succeeded)
    return recorder


def recharging_account(pack, *, now: datetime, cap_cents: int):  # type: ignore[no-untyped-def]
    """An account with a saved card and auto-recharge on: one pack when below 10 credits."""
    account = make_account(now=now)
    StripeCustomer.objects.create(account=account, stripe_customer_id=f"cus_{account.public_id}")
    AutoRecharge.objects.create(account=account, stripe_payment_method_id="pm_card_visa")
    auto_recharge_configure(account=account, pack=pack, threshold_credits=10, monthly_cap_cents=cap_cents)
    return account


def cross_threshold(account, now: datetime) -> Recharge:  # type: ignore[no-untyped-def]
    """Spend every credit of the account (10 or more): the balance trigger queues one recharge."""
    give(account, 10, now=now)
    account.refresh_from_db()
    debit_create(account=account, credits=account.available_credits, actor=STAFF, reference="generation", now=now)
    return Recharge.objects.get(account=account, status="queued")


def charge(account, now: datetime) -> Recharge:  # type: ignore[no-untyped-def]
    recharge = recharge_charge(recharge_id=cross_threshold(account, now).pk, now=now)
    assert recharge is not None
    return recharge


def pay(recharge: Recharge, now: datetime) -> None:
    """The payment's webhook: payment_intent.succeeded fulfils the purchase."""
    assert recharge.purchase is not None
    purchase_fulfil(purchase=recharge.purchase, refs=StripeRefs(), paid_cents=1500, currency="usd", now=now)


def charged_cents(recorder: RecordingHTTPClient) -> list[int]:
    return [int(r.params["amount"]) for r in recorder.sent("post", INTENTS)]


def test_a_recharge_queued_on_the_last_second_of_a_month_counts_in_the_month_it_was_charged(pack, stripe_answers):
    jan31 = datetime(2031, 1, 31, 23, 59, 58, tzinfo=UTC)
    feb1 = datetime(2031, 2, 1, 0, 0, 3, tzinfo=UTC)  # the outbox sweep's next run
    account = recharging_account(pack, now=jan31, cap_cents=1500)  # one pack a month
    queued = cross_threshold(account, jan31)
    first = recharge_charge(recharge_id=queued.pk, now=feb1)
    assert first is not None
    pay(first, feb1)

    assert spent_this_month_cents(account_id=account.pk, now=jan31) == 0
    assert spent_this_month_cents(account_id=account.pk, now=feb1) == 1500
    later = charge(account, feb1 + timedelta(days=9))  # February's cap is spent
    assert (later.status, later.error) == ("skipped", "monthly cap reached")
    assert charged_cents(stripe_answers) == [1500]
    march = charge(account, datetime(2031, 3, 1, tzinfo=UTC))  # a new month, a new cap
    assert march.status == "charging" and charged_cents(stripe_answers) == [1500, 1500]


def answer_lost(request: Recorded) -> tuple[int, dict]:
    raise stripe.APIConnectionError("Read timed out.", should_retry=True)


def declined(request: Recorded) -> tuple[int, dict]:
    error = {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}
    return 402, {"error": error}


@pytest.fixture
def no_network_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe_gateway, "MAX_NETWORK_RETRIES", 0)  # the library's sleeps between tries


def test_a_charge_whose_answer_was_lost_stays_charging_and_the_payment_counts_toward_the_cap(
    pack, stripe_answers, no_network_retries
):
    account = recharging_account(pack, now=START, cap_cents=1500)
    stripe_answers.on("post", INTENTS, answer_lost)
    first = charge(account, START)
    assert first.status == "charging" and "Read timed out" in first.error
    assert first.purchase is not None and first.purchase.status == "pending"
    assert not Event.objects.filter(account=account, type="auto_recharge.failed").exists()
    assert AutoRecharge.objects.get(account=account).consecutive_failures == 0

    pay(first, START + timedelta(minutes=1))  # Stripe did charge: payment_intent.succeeded
    first.refresh_from_db()
    assert first.status == "succeeded"
    stripe_answers.on("post", INTENTS, succeeded)
    second = charge(account, START + timedelta(days=1))
    assert (second.status, second.error) == ("skipped", "monthly cap reached")
    assert charged_cents(stripe_answers) == [1500]


def test_a_failed_recharge_whose_purchase_was_paid_after_all_counts_toward_the_cap(pack, stripe_answers):
    account = recharging_account(pack, now=START, cap_cents=1500)
    stripe_answers.on("post", INTENTS, declined)
    failed = charge(account, START)
    assert failed.status == "failed" and failed.purchase is not None and failed.purchase.status == "canceled"
    assert spent_this_month_cents(account_id=account.pk, now=START) == 0
    pay(failed, START)  # a canceled purchase is still granted when Stripe reports it paid
    assert spent_this_month_cents(account_id=account.pk, now=START) == 1500


def test_an_unanswered_charge_is_asked_again_with_its_key_and_failed_after_a_day(
    pack, stripe_answers, no_network_retries
):
    account = recharging_account(pack, now=START, cap_cents=3000)
    stripe_answers.on("post", INTENTS, answer_lost)
    recharge = charge(account, START)
    assert recharges_unanswered_settle(now=START + timedelta(minutes=5)) == 0  # not yet
    assert recharges_unanswered_settle(now=START + timedelta(minutes=11)) == 1  # lost again
    stripe_answers.on("post", INTENTS, succeeded)
    assert recharges_unanswered_settle(now=START + timedelta(minutes=21)) == 1
    keys = {r.headers["Idempotency-Key"] for r in stripe_answers.sent("post", INTENTS)}
    assert keys == {recharge.idempotency_key} and len(charged_cents(stripe_answers)) == 3
    recharge.refresh_from_db()
    assert recharge.status == "charging" and recharge.purchase is not None
    assert recharge.purchase.stripe_payment_intent_id is not None  # answered: the webhook ends it
    assert recharges_unanswered_settle(now=START + timedelta(minutes=31)) == 0

    other = recharging_account(pack, now=START, cap_cents=3000)
    stripe_answers.on("post", INTENTS, answer_lost)
    never = charge(other, START)
    assert recharges_unanswered_settle(now=START + timedelta(hours=23)) == 1
    never.refresh_from_db()
    assert (never.status, never.error) == ("failed", "the payment provider did not answer")
    assert AutoRecharge.objects.get(account=other).state == "idle"  # the next crossing recharges
    (event,) = Event.objects.filter(account=other, type="auto_recharge.failed")
    assert event.data["reason"] == "the payment provider did not answer"


@pytest.mark.parametrize("stop", ["switched off", "suspended", "pack withdrawn"])
def test_an_unanswered_charge_is_not_asked_again_once_the_user_no_longer_wants_it(
    pack, stripe_answers, no_network_retries, stop
):
    account = recharging_account(pack, now=START, cap_cents=3000)
    stripe_answers.on("post", INTENTS, answer_lost)
    recharge = charge(account, START)
    if stop == "switched off":
        auto_recharge_disable(account=account)
    elif stop == "suspended":
        Account.objects.filter(pk=account.pk).update(status=Account.Status.SUSPENDED)
    else:
        CreditPack.objects.filter(pk=pack.pk).update(active=False)
    stripe_answers.on("post", INTENTS, succeeded)
    recharges_unanswered_settle(now=START + timedelta(minutes=11))
    assert len(charged_cents(stripe_answers)) == 1  # the first, lost, charge only
    recharge.refresh_from_db()
    assert recharge.status == "charging"  # a payment Stripe did make still arrives by its webhook
    recharges_unanswered_settle(now=START + timedelta(hours=23))
    recharge.refresh_from_db()
    assert recharge.status == "failed" and len(charged_cents(stripe_answers)) == 1


def test_a_pack_no_longer_sold_is_not_bought_and_the_user_is_told(pack, stripe_answers):
    account = recharging_account(pack, now=START, cap_cents=3000)
    CreditPack.objects.filter(pk=pack.pk).update(active=False)  # an operator stops selling it
    skipped = charge(account, START)
    assert skipped.status == "skipped" and skipped.purchase_id is None
    assert skipped.error == "the pack you chose is no longer sold: choose another on your billing page"
    assert stripe_answers.requests == [] and not Purchase.objects.filter(account=account).exists()
    (told,) = Event.objects.filter(account=account, type="auto_recharge.failed")
    assert told.data["reason"] == skipped.error and told.data["auto_recharge_disabled"] is False
    assert AutoRecharge.objects.get(account=account).state == "idle"  # the next crossing tries again
