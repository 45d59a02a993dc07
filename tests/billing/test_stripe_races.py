"""Stripe's webhooks racing an operator's refund of the same purchase, and reconciliation racing
the payments' webhooks, with real threads against PostgreSQL (each its own connection)."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.test import Client

from accounts.models import Account
from billing.models import Grant, LedgerEntry, Purchase, PurchaseRefund, StripeEvent
from billing.services.ledger import debit_create
from billing.services.reconciliation import stripe_reconcile
from console.services import Operator, purchase_refund_audited
from tests.billing.factories import STAFF
from tests.billing.stripe_support import (
    Recorded,
    RecordingHTTPClient,
    charge_object,
    event,
    intent_object,
    new_id,
    pending_purchase,
    post_webhook,
    stripe_list,
)
from tests.billing.test_purchases import fulfil
from tests.concurrency import run_concurrently
from tests.console.conftest import operator

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROUNDS = 4


def answer_refund(request: Recorded) -> tuple[int, dict]:
    refund = {"id": new_id("re_"), "object": "refund", "status": "succeeded"}
    return 200, {**refund, "amount": int(request.params["amount"])}


@pytest.mark.parametrize("operator_cents", [None, 500])
def test_an_operator_refund_racing_the_refund_webhook_and_spends_claws_back_once(
    recorder, pack, operator_cents, assert_ledger_clean
):
    """The operator refunds (all, or 500 of 1500 cents) while Stripe's charge.refunded for that
    very refund arrives and the buyer spends from the lot."""
    recorder.on("post", "/v1/refunds", answer_refund)
    staff = Operator.staff(operator(f"refund-race-{uuid.uuid4().hex[:8]}@example.com", superuser=True))
    for _ in range(ROUNDS):
        _refund_racing_its_webhook(fulfil(pending_purchase(pack)), staff, operator_cents)
    assert_ledger_clean()


def _refund_racing_its_webhook(purchase: Purchase, staff: Operator, operator_cents: int | None) -> None:
    account = Account.objects.get(pk=purchase.account_id)
    refunded_cents = 1500 if operator_cents is None else operator_cents
    charge = charge_object(purchase, amount_refunded=refunded_cents)
    statuses: list[int] = []

    def work(index: int) -> None:
        if index == 0:
            once = uuid.uuid4().hex * 2
            purchase_refund_audited(
                operator=staff, purchase=purchase, reason="asked", amount_cents=operator_cents, confirmation=once
            )
        elif index == 1:
            statuses.append(post_webhook(Client(), event("charge.refunded", charge)).status_code)
        else:
            debit_create(account=account, credits=10, actor=STAFF, reference="spent before or after")

    run_concurrently(3, work)
    assert statuses == [200]
    purchase.refresh_from_db()
    account.refresh_from_db()
    lot = Grant.objects.get(pk=purchase.grant_id)
    assert purchase.refunded_cents == refunded_cents
    assert purchase.status == ("refunded" if operator_cents is None else "partially_refunded")
    target = 115 if operator_cents is None else 38  # 115 * 500 / 1500, rounded down
    # The debit came either before the clawback (its 10 credits unrecoverable) or after it.
    assert purchase.clawed_back_credits + purchase.unrecoverable_credits == target
    assert LedgerEntry.objects.filter(grant=lot, kind="clawback").count() == 1
    assert lot.remaining == account.available_credits == 115 - 10 - purchase.clawed_back_credits
    assert PurchaseRefund.objects.get(purchase=purchase).status == "succeeded"
    assert StripeEvent.objects.filter(payload__data__object__id=charge["id"]).get().status == "processed"


def test_reconciliation_racing_the_payment_webhooks_grants_each_purchase_once(recorder, pack, assert_ledger_clean):
    for _ in range(ROUNDS):
        _reconciliations_racing_webhooks(recorder, [pending_purchase(pack) for _ in range(6)])
    assert_ledger_clean()


def _reconciliations_racing_webhooks(recorder: RecordingHTTPClient, purchases: list[Purchase]) -> None:
    intents = [intent_object(purchase) for purchase in purchases]
    recorder.on("get", "/v1/checkout/sessions", (200, stripe_list("/v1/checkout/sessions", [])))
    recorder.on("get", "/v1/payment_intents", (200, stripe_list("/v1/payment_intents", intents[::-1])))
    statuses: list[int] = []

    def work(index: int) -> list[str]:
        if index < 2:
            return stripe_reconcile().fulfilled
        client = Client()
        for intent in intents[index % 2 :: 2]:
            statuses.append(post_webhook(client, event("payment_intent.succeeded", intent)).status_code)
        return []

    fulfilled = run_concurrently(4, work)
    assert statuses == [200] * 6
    ids = {purchase.pk for purchase in purchases}
    assert Purchase.objects.filter(pk__in=ids, status="paid").count() == 6
    assert Grant.objects.filter(purchase__pk__in=ids).count() == 6
    granted_by_events = StripeEvent.objects.filter(purchase__in=ids, error__startswith="granted").count()
    # Each purchase granted by exactly one of the two reconciliations or its webhook.
    by_reconcile = Counter(public_id for report in fulfilled for public_id in report)
    assert set(by_reconcile.values()) <= {1}
    assert len(by_reconcile) + granted_by_events == 6
    for purchase in purchases:
        assert Account.objects.get(pk=purchase.account_id).available_credits == 115
