"""billing_debit_batch runs its items on one read of its accounts and writes the debit rows and each
account's cached balances once, after the last item: the entries still say the balance item by
item, and the balance trigger sees one change per account."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Account
from billing.models import Debit, LedgerEntry
from billing.services.batch import BatchDebit, debits_create_batch
from notifications.models import Event
from tests.billing.factories import STAFF, give, make_account

pytestmark = pytest.mark.django_db


def writes() -> dict[str, tuple[int, int]]:
    """Rows inserted and updated so far in this transaction, for the tables a batch writes."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables "
            "WHERE relname IN ('accounts_account', 'billing_debit')"
        )
        return {name: (inserted, updated) for name, inserted, updated in cursor.fetchall()}


def batch(*items: tuple[Account | str, int]):  # type: ignore[no-untyped-def]
    return debits_create_batch(
        items=[
            BatchDebit(account=a if isinstance(a, str) else a.public_id, credits=c, reference=f"r{n}")
            for n, (a, c) in enumerate(items)
        ],
        actor=STAFF,
    )


def test_each_account_and_debit_row_is_written_once_whatever_its_items(assert_ledger_clean):
    one, two = make_account(), make_account()
    give(one, 20)  # neither crosses the low-balance threshold (10): the trigger writes nothing
    give(two, 20)
    before = writes()
    outcomes = batch((one, 1), (two, 2), (one, 3), ("acct_nobodyhasthisid", 1), (one, 50), (one, 1))
    after = writes()

    assert [o.error.code if o.error else None for o in outcomes] == [
        None,
        None,
        None,
        "not_found",
        "insufficient_credits",
        None,
    ]
    inserted = after["billing_debit"][0] - before.get("billing_debit", (0, 0))[0]
    updated = after["accounts_account"][1] - before["accounts_account"][1]
    assert (inserted, updated) == (4, 2)
    one.refresh_from_db()
    two.refresh_from_db()
    assert (one.available_credits, two.available_credits) == (15, 18)
    assert_ledger_clean()


def test_entries_say_the_balance_item_by_item_and_debits_keep_the_items_order():
    account = make_account()
    give(account, 10)
    outcomes = batch((account, 1), (account, 2), (account, 20), (account, 3))

    made = [o.body for o in outcomes if o.body is not None]
    assert [body["balance"]["available"] for body in made] == [9, 7, 4]
    debits = list(Debit.objects.filter(account=account).order_by("pk"))
    assert [d.public_id for d in debits] == [body["id"] for body in made]
    assert [d.reference for d in debits] == ["r0", "r1", "r3"]
    entries = LedgerEntry.objects.filter(account=account, kind="debit").order_by("pk")
    assert [(e.debit_id, e.credits, e.balance_after) for e in entries] == [
        (debits[0].pk, -1, 9),
        (debits[1].pk, -2, 7),
        (debits[2].pk, -3, 4),
    ]


def test_the_balance_trigger_sees_the_balances_after_the_batch():
    account = make_account()
    give(account, 12)
    before = writes()
    batch((account, 1), (account, 2), (account, 1))  # 11, 9 (below 10), 8
    events = [(e.type, e.data) for e in Event.objects.filter(account=account)]
    assert events == [("balance.low", {"available": 8, "held": 0, "threshold": 10})]
    # The batch's write, and the trigger's record of the state it announced.
    assert writes()["accounts_account"][1] - before["accounts_account"][1] == 2
    with connection.cursor() as cursor:
        cursor.execute("SELECT balance_low FROM accounts_account WHERE id = %s", [account.pk])
        assert cursor.fetchone() == (True,)


def test_an_account_whose_items_are_all_refused_keeps_what_settling_wrote():
    account = make_account()
    now = timezone.now()
    give(account, 5, expires_at=now + timedelta(seconds=1), now=now - timedelta(days=1))
    give(account, 2)
    outcomes = debits_create_batch(
        items=[BatchDebit(account=account.public_id, credits=3)], actor=STAFF, now=now + timedelta(seconds=2)
    )
    assert outcomes[0].error is not None and outcomes[0].error.code == "insufficient_credits"
    assert outcomes[0].error.details == {"available": 2, "requested": 3}
    account.refresh_from_db()
    assert account.available_credits == 2
    assert LedgerEntry.objects.filter(account=account, kind="expire").count() == 1
