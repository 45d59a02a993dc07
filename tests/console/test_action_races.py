"""Operators' actions racing the spends of the same account, with real threads against
PostgreSQL (each thread its own connection), started together by a barrier."""

from __future__ import annotations

import pytest
from django.db.models import Sum

from accounts.models import Account
from billing.models import Debit, Grant, Hold, LedgerEntry
from billing.services.ledger import debit_create, debit_refund, hold_create, hold_release
from console.services import Operator, credits_clawback, credits_grant, grant_void_audited
from tests.billing.factories import STAFF, give, make_account
from tests.concurrency import run_concurrently

from .conftest import operator

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROUNDS = 15


def spend_and_give_back(account: Account, index: int) -> None:
    """Hold then release, debit then refund: every credit taken goes back to its lot."""
    for n in range(ROUNDS):
        hold = hold_create(account=account, credits=1 + n % 3, expires_in=900, actor=STAFF, reference=f"h{index}-{n}")
        debit = debit_create(account=account, credits=1 + n % 2, actor=STAFF, reference=f"d{index}-{n}")
        hold_release(hold=hold, actor=STAFF)
        debit_refund(debit=debit, actor=STAFF)


def test_voiding_a_lot_while_spends_take_from_it_and_give_back_leaves_it_empty(assert_ledger_clean):
    account = make_account()
    voided = give(account, 40, priority=10)  # spent first
    kept = give(account, 1000, priority=20)
    staff = Operator.staff(operator("void-race@example.com", superuser=True))

    def work(index: int) -> int:
        if index == 0:
            return grant_void_audited(operator=staff, grant=voided, reason="fraud", confirmation="v" * 64)
        spend_and_give_back(Account.objects.get(pk=account.pk), index)
        return 0

    run_concurrently(6, work)

    assert not Hold.objects.filter(account=account, status=Hold.Status.PENDING).exists()
    assert Debit.objects.filter(account=account, refunded_at__isnull=True).count() == 0
    voided.refresh_from_db()
    kept.refresh_from_db()
    assert voided.remaining == 0 and voided.voided_at is not None  # whatever came back later was voided too
    assert kept.remaining == 1000
    account.refresh_from_db()
    assert (account.available_credits, account.held_credits) == (1000, 0)
    gone = LedgerEntry.objects.filter(grant=voided, kind="void").aggregate(t=Sum("credits"))["t"]
    assert gone == -40  # every credit of the lot voided exactly once, at the void or as it came back
    assert_ledger_clean()


def test_operator_grants_and_clawbacks_racing_spends_keep_the_balance_exact(assert_ledger_clean):
    account = make_account()
    lot = give(account, 500, priority=10)
    staff = Operator.staff(operator("grant-race@example.com", superuser=True))

    def work(index: int) -> int:
        if index == 0:
            taken = 0
            for n in range(ROUNDS):
                credits_grant(operator=staff, account=account, credits=5, reason="goodwill", confirmation=f"g{n:063d}")
                taken += credits_clawback(
                    operator=staff, grant=lot, credits=3, reason="correction", confirmation=f"c{n:063d}"
                )
            return taken
        for n in range(ROUNDS):
            debit_create(account=account, credits=2, actor=STAFF, reference=f"d{index}-{n}")
        return 0

    taken = run_concurrently(5, work)[0]

    account.refresh_from_db()
    assert taken == 3 * ROUNDS
    assert account.available_credits == 500 + 5 * ROUNDS - taken - 2 * 4 * ROUNDS
    assert Grant.objects.filter(account=account, source=Grant.Source.ADJUSTMENT).count() == 1 + ROUNDS
    assert_ledger_clean()
