"""The batch route's model-free charging (billing.services.batch) against debits_create_batch.

debits_create_plain charges the items whose accounts have nothing to settle and leaves the rest
to debits_create_batch, in the same transaction, as the batch route does. These tests run the
same items through both ways on twin accounts and compare every row, every answer, and which
accounts are left to the general path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Account
from billing.errors import InsufficientCredits
from billing.models import Grant, LedgerEntry
from billing.services.batch import PlainDebit, debits_create_plain
from billing.services.ledger import Actor, BatchDebit, debits_create_batch, hold_create
from tests.billing.factories import give, make_account
from tests.billing.test_debit_batch import item, post_batch, results_of
from tests.billing.test_one_call import state

SERVICE = Actor("service", "7")

LOT = st.tuples(
    st.integers(min_value=1, max_value=12),  # credits
    st.sampled_from([None, -1, 1, 30]),  # expires in days (None: never; -1: lapsed already)
    st.sampled_from([10, 50]),  # priority
)
KIND = st.sampled_from(["plain", "plain", "plain", "suspended", "free_due", "lapsed_hold"])


def _account(kind: str, lots: list[tuple[int, int | None, int]], now) -> Account:  # type: ignore[no-untyped-def]
    account = make_account(free=kind == "free_due", now=now - timedelta(days=3))
    for credits, days, priority in lots:
        expires = None if days is None else now + timedelta(days=days)
        give(account, credits, expires_at=expires, priority=priority, now=now - timedelta(days=2))
    if kind == "lapsed_hold":
        give(account, 1, now=now - timedelta(days=2))  # what the hold takes
        hold_create(account=account, credits=1, expires_in=60, actor=SERVICE, now=now - timedelta(days=1))
    if kind == "suspended":
        Account.objects.filter(pk=account.pk).update(status=Account.Status.SUSPENDED)
    account.refresh_from_db()
    return account


def _both_ways(items: list[BatchDebit], now) -> list[Any]:  # type: ignore[no-untyped-def]
    """What the batch route does: the plain way first, the rest the general way."""
    with transaction.atomic():
        plain = debits_create_plain(items=items, actor=SERVICE, now=now)
        rest = [n for n, made in enumerate(plain) if made is None]
        general = debits_create_batch(items=[items[n] for n in rest], actor=SERVICE, now=now)
    answers: list[Any] = list(plain)
    for n, outcome in zip(rest, general, strict=True):
        answers[n] = outcome
    return answers


def _answer(outcome: Any) -> tuple[Any, ...]:  # type: ignore[no-untyped-def]
    if isinstance(outcome, PlainDebit):
        return ("made", outcome.available, outcome.held)
    if isinstance(outcome, InsufficientCredits):
        return ("refused", outcome.code, outcome.details)
    if outcome.debit is not None:
        return ("made", outcome.available, outcome.held)
    return ("refused", outcome.error.code, outcome.error.details)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    accounts=st.lists(st.tuples(KIND, st.lists(LOT, max_size=4)), min_size=1, max_size=3),
    spends=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.integers(min_value=1, max_value=15)), max_size=9
    ),
)
def test_the_plain_way_writes_what_debits_create_batch_writes(accounts, spends):
    now = timezone.now()
    twins = [(_account(kind, lots, now), _account(kind, lots, now)) for kind, lots in accounts]
    by_plain, by_general = [], []
    for n, (which, credits) in enumerate(spends):
        if which >= len(twins):  # an account that does not exist
            names = ("acct_missing", "acct_missing")
        else:
            names = (twins[which][0].public_id, twins[which][1].public_id)
        for name, into in zip(names, (by_plain, by_general), strict=True):
            into.append(
                BatchDebit(account=name, credits=credits, reference=f"r{n}", metadata={"n": n} if n % 2 else None)
            )

    plain = _both_ways(by_plain, now)
    with transaction.atomic():
        general = debits_create_batch(items=by_general, actor=SERVICE, now=now)

    assert [_answer(o) for o in plain] == [_answer(o) for o in general]
    for mine, theirs in twins:
        assert state(mine) == state(theirs)
    made = [o for o in plain if isinstance(o, PlainDebit)]
    for outcome, spend in zip(plain, by_plain, strict=True):
        if isinstance(outcome, PlainDebit):
            twin = next(t for t, _ in twins if t.public_id == spend.account)
            assert twin.status == Account.Status.ACTIVE
    assert len({o.public_id for o in made}) == len(made)


@pytest.mark.django_db
def test_accounts_with_something_to_settle_are_left_to_the_general_way():
    now = timezone.now()
    plain = _account("plain", [(5, 30, 10)], now)
    cases = {
        "suspended": _account("suspended", [(5, 30, 10)], now),
        "free_due": _account("free_due", [(5, 30, 10)], now),
        "lapsed_hold": _account("lapsed_hold", [(5, 30, 10)], now),
        "lapsed_lot": _account("plain", [(5, 30, 10), (2, -1, 10)], now),
    }
    items = [BatchDebit(account=a.public_id, credits=1) for a in [plain, *cases.values()]]
    items.append(BatchDebit(account="acct_nobodyhasthisid", credits=1))
    with transaction.atomic():
        outcomes = debits_create_plain(items=items, actor=SERVICE, now=now)
    assert isinstance(outcomes[0], PlainDebit) and outcomes[0].available == 4
    assert outcomes[1:] == [None] * (len(cases) + 1)
    for account in cases.values():  # nothing was written for them
        assert not LedgerEntry.objects.filter(account=account, kind="debit").exists()


@pytest.mark.django_db(transaction=True)
def test_the_plain_way_needs_the_batch_transaction():
    with pytest.raises(RuntimeError):
        debits_create_plain(items=[BatchDebit(account="acct_x", credits=1)], actor=SERVICE, now=timezone.now())


@pytest.mark.django_db
def test_a_lot_used_up_by_an_earlier_item_gets_no_empty_entry(api, assert_ledger_clean):
    """Two items of one batch on one account: the second skips the lot the first emptied."""
    for way in ("plain", "general"):
        account = make_account(free=way == "general")  # a due free grant sends it the general way
        now = timezone.now()
        give(account, 2, expires_at=now + timedelta(days=1), priority=10)
        give(account, 40, expires_at=now + timedelta(days=9), priority=10)
        response = post_batch(api, [item(account, f"{way}-1", credits=2), item(account, f"{way}-2", credits=3)])
        assert [r["status"] for r in results_of(response)] == [201, 201]
        credits = list(
            LedgerEntry.objects.filter(account=account, kind="debit").order_by("id").values_list("credits", flat=True)
        )
        assert credits == [-2, -3], (way, credits)
    assert_ledger_clean()


@pytest.mark.django_db
def test_the_batch_route_charges_plain_accounts_in_five_statements(api, assert_ledger_clean):
    now = timezone.now()
    accounts = [make_account() for _ in range(30)]
    for account in accounts:
        give(account, 3, expires_at=now + timedelta(days=5))
    debits = [item(account, f"k{n}", credits=2) for n, account in enumerate(accounts)]
    debits.append(item(accounts[0], "k-again", credits=2))  # 1 left: refused, and recorded
    with CaptureQueriesContext(connection) as queries:
        response = post_batch(api, debits)
    statuses = [r["status"] for r in results_of(response)]
    assert statuses == [201] * 30 + [402]
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
    data = [q["sql"] for q in queries if not q["sql"].startswith(control) and "servicekey" not in q["sql"]]
    # keys read, lock, lots, posting, keys written
    assert len(data) == 5, data
    assert sum(Grant.objects.filter(account__in=accounts).values_list("remaining", flat=True)) == 30
    assert_ledger_clean()
