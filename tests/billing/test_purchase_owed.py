"""A refund or dispute that finds a purchase's credits spent or held records them as
unrecoverable: the purchase owes them. Credits that come back to its lot later (a hold released
or lapsed, a debit refunded) pay that first, so the money and the credits never both go back to
the customer; the rest goes back on the lot as before."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from billing.errors import PurchaseGrantNotVoidable
from billing.models import Grant, LedgerEntry, Purchase
from billing.services.ledger import (
    account_settle,
    debit_create,
    debit_refund,
    grant_clawback,
    grant_void,
    hold_capture,
    hold_create,
    hold_release,
)
from billing.services.purchases import (
    StripeRefs,
    purchase_dispute_closed,
    purchase_dispute_opened,
    purchase_fulfil,
    purchase_refunds_sync,
)
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import pending_purchase

pytestmark = pytest.mark.django_db


@pytest.fixture
def bought(stripe_keys, pack) -> Purchase:  # type: ignore[no-untyped-def]
    """A paid purchase of one 115-credit pack for 1500 cents, its lot the account's only one."""
    purchase = pending_purchase(pack)
    assert purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=1500, currency="usd")
    purchase.refresh_from_db()
    return purchase


def state(purchase: Purchase) -> tuple[int, int, int, int]:
    """(available credits, credits left on the lot, clawed back, unrecoverable)."""
    purchase.refresh_from_db()
    purchase.account.refresh_from_db()
    remaining = Grant.objects.get(pk=purchase.grant_id).remaining
    return purchase.account.available_credits, remaining, purchase.clawed_back_credits, purchase.unrecoverable_credits


def test_a_hold_released_after_a_full_refund_pays_what_the_purchase_owes(bought, assert_ledger_clean):
    hold = hold_create(account=bought.account, credits=100, expires_in=900, actor=STAFF)
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500)
    assert state(bought) == (0, 0, 15, 100)

    hold_release(hold=hold, actor=STAFF)
    assert state(bought) == (0, 0, 115, 0)
    clawback = LedgerEntry.objects.filter(kind="clawback").latest("id")
    assert (clawback.credits, clawback.grant_id, clawback.reference) == (-100, bought.grant_id, bought.public_id)
    assert_ledger_clean()


def test_a_debit_refunded_after_a_full_refund_pays_what_the_purchase_owes(bought, assert_ledger_clean):
    debit = debit_create(account=bought.account, credits=100, actor=STAFF)
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500)
    assert state(bought) == (0, 0, 15, 100)

    debit_refund(debit=debit, actor=STAFF)
    assert state(bought) == (0, 0, 115, 0)
    assert_ledger_clean()


def test_a_hold_that_lapses_after_a_lost_dispute_pays_what_the_purchase_owes(bought, assert_ledger_clean):
    now = timezone.now()
    hold_create(account=bought.account, credits=60, expires_in=60, actor=STAFF, now=now)
    purchase_dispute_opened(purchase=bought)
    purchase_dispute_closed(purchase=bought, outcome="lost", disputed_cents=1500, now=now)
    assert state(bought) == (0, 0, 55, 60)

    account_settle(account=bought.account, actor=STAFF, now=now + timedelta(minutes=5))
    assert state(bought) == (0, 0, 115, 0)
    assert_ledger_clean()


def test_a_partial_capture_pays_with_what_it_gives_back_and_the_captured_credits_stay_owed(bought, assert_ledger_clean):
    hold = hold_create(account=bought.account, credits=100, expires_in=900, actor=STAFF)
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500)
    hold_capture(hold=hold, credits=30, actor=STAFF)
    # 70 came back: all of them pay; the 30 captured were spent and stay unrecoverable.
    assert state(bought) == (0, 0, 85, 30)
    assert_ledger_clean()


def test_credits_beyond_what_is_owed_go_back_on_the_lot(bought, assert_ledger_clean):
    debit = debit_create(account=bought.account, credits=100, actor=STAFF)
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=750)  # half: 57 of the 115 credits
    assert state(bought) == (0, 0, 15, 42)

    debit_refund(debit=debit, actor=STAFF)
    assert state(bought) == (58, 58, 57, 0)

    # The rest of the money goes back: the rest of the credits with it.
    refunded = purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500)
    assert refunded.status == "refunded"
    assert state(bought) == (0, 0, 115, 0)
    assert_ledger_clean()


def test_credits_coming_back_to_a_lapsed_purchase_lot_expire_and_the_debt_stays(bought, assert_ledger_clean):
    now = timezone.now()
    debit = debit_create(account=bought.account, credits=100, actor=STAFF, now=now)
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500, now=now)
    later = Grant.objects.get(pk=bought.grant_id).expires_at + timedelta(days=1)

    debit_refund(debit=debit, actor=STAFF, now=later)
    assert state(bought) == (0, 0, 15, 100)
    assert LedgerEntry.objects.filter(kind="expire", grant_id=bought.grant_id).get().credits == -100
    assert_ledger_clean()


def test_a_purchase_that_owes_nothing_takes_nothing_from_credits_coming_back(bought, assert_ledger_clean):
    debit = debit_create(account=bought.account, credits=100, actor=STAFF)
    debit_refund(debit=debit, actor=STAFF)
    assert state(bought) == (115, 115, 0, 0)
    assert not LedgerEntry.objects.filter(kind="clawback").exists()
    assert_ledger_clean()


def test_a_clawback_of_a_purchase_lot_is_counted_on_the_purchase(bought, assert_ledger_clean):
    assert grant_clawback(grant=Grant.objects.get(pk=bought.grant_id), credits=10, actor=STAFF) == 10
    assert state(bought) == (105, 105, 10, 0)
    assert_ledger_clean()

    # A later full refund takes only the rest: nothing is counted twice, nothing is owed.
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500)
    assert state(bought) == (0, 0, 115, 0)
    assert_ledger_clean()


def test_a_purchase_lot_is_not_voided(bought, assert_ledger_clean):
    with pytest.raises(PurchaseGrantNotVoidable):
        grant_void(grant=Grant.objects.get(pk=bought.grant_id), actor=STAFF)
    assert state(bought) == (115, 115, 0, 0)
    assert not LedgerEntry.objects.filter(kind="void").exists()


def test_check_ledger_reports_a_purchase_that_owes_credits_its_lot_still_has(bought, run_check_ledger):
    # What the engine never leaves: a purchase owing credits while its lot has some.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_purchase SET unrecoverable_credits = 5 WHERE id = %s", [bought.pk])
    code, out = run_check_ledger()
    assert code == 1
    assert f"{bought.public_id}" in out and "5 unrecoverable with 115 left on the lot" in out


def migration_0030():  # type: ignore[no-untyped-def]
    return importlib.import_module("billing.migrations.0030_credits_coming_back")


def test_the_migration_takes_back_what_a_purchase_owes_from_credits_its_lot_has_again(
    bought, assert_ledger_clean, run_check_ledger
):
    # As the rule before it could leave a purchase: owing credits that came back to its lot.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_purchase SET unrecoverable_credits = 40 WHERE id = %s", [bought.pk])
    assert run_check_ledger()[0] == 1
    with connection.cursor() as cursor:
        assert migration_0030().purchases_repay(cursor) == 1
        assert migration_0030().purchases_repay(cursor) == 0  # done once
    assert state(bought) == (75, 75, 40, 0)
    clawback = LedgerEntry.objects.get(kind="clawback")
    assert (clawback.credits, clawback.reference, clawback.actor_id) == (
        -40,
        bought.public_id,
        "migration billing.0030",
    )
    assert_ledger_clean()


def test_the_migration_dates_the_lots_voided_before_it(assert_ledger_clean):
    account = make_account()
    lot = give(account, 20, source="promo")
    grant_void(grant=lot, actor=STAFF)
    voided_at = LedgerEntry.objects.get(kind="void").created_at
    Grant.objects.filter(pk=lot.pk).update(voided_at=None)  # as the column starts
    with connection.cursor() as cursor:
        cursor.execute(migration_0030().VOIDED_AT_FROM_ENTRIES)
    lot.refresh_from_db()
    assert lot.voided_at == voided_at


def test_a_hold_lapsed_by_the_refunds_time_is_released_before_the_clawback(bought, assert_ledger_clean):
    now = timezone.now()
    hold_create(account=bought.account, credits=100, expires_in=60, actor=STAFF, now=now)
    # The refund's business time is past the hold's expiry: the hold is released before the
    # clawback looks at the lot, so nothing is owed.
    purchase_refunds_sync(purchase=bought, stripe_refunded_cents=1500, now=now + timedelta(minutes=5))
    assert state(bought) == (0, 0, 115, 0)
    assert_ledger_clean()
