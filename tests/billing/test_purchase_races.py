"""A purchase refunded in full (Stripe's charge.refunded, processed) while an operator claws
back part of its lot and spends take credits from the lot and give them back, with real
threads against PostgreSQL (each its own connection)."""

from __future__ import annotations

import pytest

from accounts.models import Account
from billing.errors import InsufficientCredits
from billing.models import Grant, Purchase
from billing.services.ledger import debit_create, debit_refund, hold_create, hold_release
from billing.services.purchases import StripeRefs, purchase_fulfil, purchase_refunds_sync
from console.services import Operator, credits_clawback
from tests.billing.factories import STAFF
from tests.billing.stripe_support import pending_purchase
from tests.concurrency import run_concurrently
from tests.console.conftest import operator

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def spend_and_give_back(account: Account, index: int) -> None:
    """Hold and debit from the lot, then give both back, until the lot has nothing left."""
    for n in range(10):
        try:
            hold = hold_create(account=account, credits=3, expires_in=900, actor=STAFF, reference=f"{index}")
        except InsufficientCredits:
            return
        try:
            debit = debit_create(account=account, credits=2, actor=STAFF, reference=f"{index}-{n}")
        except InsufficientCredits:
            hold_release(hold=hold, actor=STAFF)
            return
        hold_release(hold=hold, actor=STAFF)
        debit_refund(debit=debit, actor=STAFF)


def test_a_full_refund_an_operator_clawback_and_spends_giving_back_take_the_lot_exactly_once(
    stripe_keys, pack, assert_ledger_clean
):
    purchase = pending_purchase(pack)
    assert purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")
    purchase.refresh_from_db()
    lot = Grant.objects.get(pk=purchase.grant_id)
    staff = Operator.staff(operator("claw-race@example.com", superuser=True))

    def work(index: int) -> None:
        if index == 0:
            purchase_refunds_sync(purchase=purchase, stripe_refunded_cents=1500)
        elif index == 1:
            credits_clawback(operator=staff, grant=lot, credits=20, reason="abuse", confirmation="k" * 64)
        else:
            spend_and_give_back(Account.objects.get(pk=purchase.account_id), index)

    run_concurrently(5, work)

    purchase.refresh_from_db()
    lot.refresh_from_db()
    account = Account.objects.get(pk=purchase.account_id)
    assert purchase.status == Purchase.Status.REFUNDED and purchase.refunded_cents == 1500
    # Everything spent came back, so all 115 credits were taken back, once: none owed, none left.
    assert (purchase.clawed_back_credits, purchase.unrecoverable_credits, lot.remaining) == (115, 0, 0)
    assert (account.available_credits, account.held_credits) == (0, 0)
    assert_ledger_clean()
