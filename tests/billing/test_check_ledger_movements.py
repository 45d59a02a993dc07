"""check_ledger's rules on how credits move between lots, holds, debits and purchases, beyond
the sums of test_check_ledger.py.

Each corruption is what a faulty writer would leave: the rows it writes agree with each other
(lots, cached balances and entries move together), so only the rule under test can see it. A
writer's mistake in an entry is made with the append-only trigger off for that one statement
(session_replication_role), as the database refuses it otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F

from accounts.models import Account
from billing.integrity import ledger_breaches
from billing.models import Debit, Grant, IdempotencyKey, LedgerEntry, Purchase
from billing.services.ledger import (
    Actor,
    KeyRecord,
    debit_create,
    debit_refund,
    debit_spend,
    grant_void,
    hold_capture,
    hold_create,
    hold_release,
)
from billing.services.purchases import StripeRefs, purchase_fulfil
from tests.billing.factories import give, make_account
from tests.billing.stripe_support import pending_purchase

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 10, 12, 0, 0, tzinfo=UTC)
SVC = Actor("service", "1")
KEY = KeyRecord("service:1", "debit-1", "hash")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raw(sql: str, params: list[object]) -> None:
    """One statement changing at least one row, with the ledger's append-only trigger off for it alone."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
            assert cursor.rowcount >= 1
        finally:
            cursor.execute("SET session_replication_role = DEFAULT")


def reported() -> list[str]:
    return [str(breach) for breach in ledger_breaches()]


def moved_to_lot(entry: LedgerEntry, lot: int) -> None:
    """A writer that put the entry's credits on another lot of the account: both lots and the
    entry agree with each other."""
    raw("UPDATE billing_ledgerentry SET grant_id = %s WHERE id = %s", [lot, entry.pk])
    raw("UPDATE billing_grant SET remaining = remaining - %s WHERE id = %s", [entry.credits, entry.grant_id])
    raw("UPDATE billing_grant SET remaining = remaining + %s WHERE id = %s", [entry.credits, lot])


@pytest.fixture
def ledger(stripe_keys, pack) -> dict:  # type: ignore[no-untyped-def]
    """An account that has seen every movement: lots expiring and not, a debit, a refunded debit,
    a captured, a released and a pending hold, a voided lot, a paid purchase and a debit made
    under an Idempotency-Key."""
    account = make_account(now=T0)
    rows = {
        "account": account,
        "free": give(account, 10, expires_at=T0 + timedelta(days=30), now=T0),
        "paid": give(account, 20, now=T0),
        "debit": debit_create(account=account, credits=2, actor=SVC, now=at(1)),
        "refunded": debit_create(account=account, credits=3, actor=SVC, now=at(2)),
    }
    debit_refund(debit=rows["refunded"], actor=SVC, now=at(3))
    rows["captured"] = hold_create(account=account, credits=3, expires_in=900, actor=SVC, now=at(4))
    hold_capture(hold=rows["captured"], credits=1, actor=SVC, now=at(5))
    rows["released"] = hold_create(account=account, credits=2, expires_in=900, actor=SVC, now=at(6))
    hold_release(hold=rows["released"], actor=SVC, now=at(7))
    rows["pending"] = hold_create(account=account, credits=4, expires_in=900, actor=SVC, now=at(8))
    rows["voided"] = give(account, 5, now=at(9))
    grant_void(grant=rows["voided"], actor=SVC, now=at(10))
    purchase = pending_purchase(pack, account=account)
    purchase_fulfil(purchase=purchase, refs=StripeRefs(), paid_cents=purchase.amount_cents, currency="usd", now=at(11))
    purchase.refresh_from_db()
    rows["purchase"] = purchase
    debit_spend(account=account.public_id, credits=1, operation="", reference="k", actor=SVC, now=at(12), record=KEY)
    return rows


def test_a_ledger_that_saw_every_movement_is_clean(ledger):
    assert reported() == []
    assert ledger_breaches(account_ids=[ledger["account"].pk]) == []


def test_an_entry_with_a_wrong_balance_after_is_a_breach(ledger):
    entry = LedgerEntry.objects.get(debit=ledger["debit"])
    raw("UPDATE billing_ledgerentry SET balance_after = balance_after + 1 WHERE id = %s", [entry.pk])

    assert f"entry_balance: entry {entry.pk}" in "\n".join(reported())


def test_an_entry_with_a_wrong_held_after_is_a_breach(ledger):
    entry = LedgerEntry.objects.get(hold=ledger["pending"], kind="hold")
    raw("UPDATE billing_ledgerentry SET held_after = held_after - 1 WHERE id = %s", [entry.pk])

    assert f"entry_balance: entry {entry.pk}" in "\n".join(reported())


def test_a_release_that_gives_back_less_than_it_held_is_a_breach(ledger):
    """The hold holds nothing more and its lot and the cached balance agree with its entries, but a
    credit of the released hold went nowhere."""
    account, hold = ledger["account"], ledger["released"]
    release = LedgerEntry.objects.get(hold=hold, kind="release")
    raw("UPDATE billing_ledgerentry SET credits = credits - 1 WHERE id = %s", [release.pk])
    later = "account_id = %s AND id >= %s"  # the running balances from the release on
    raw(f"UPDATE billing_ledgerentry SET balance_after = balance_after - 1 WHERE {later}", [account.pk, release.pk])
    raw("UPDATE billing_grant SET remaining = remaining - 1 WHERE id = %s", [release.grant_id])
    raw("UPDATE accounts_account SET available_credits = available_credits - 1 WHERE id = %s", [account.pk])

    assert f"hold: {hold.public_id}" in "\n".join(reported())


def test_a_refund_that_gives_credits_back_to_another_lot_is_a_breach(ledger):
    """The debit took a credit from the purchase's lot; its refund puts it on the lot that expires
    in 30 days instead."""
    account = ledger["account"]
    debit_create(account=account, credits=2, actor=SVC, now=at(20))  # the lot expiring first is empty now
    debit = debit_create(account=account, credits=1, actor=SVC, now=at(21))
    debit_refund(debit=debit, actor=SVC, now=at(22))
    assert reported() == []
    moved_to_lot(LedgerEntry.objects.get(debit=debit, kind="refund"), ledger["free"].pk)

    assert f"refund_lot: {debit.public_id}" in "\n".join(reported())


def test_a_release_that_gives_credits_back_to_another_lot_is_a_breach(ledger):
    account = ledger["account"]
    debit_create(account=account, credits=2, actor=SVC, now=at(20))  # the lot expiring first is empty now
    hold = hold_create(account=account, credits=1, expires_in=900, actor=SVC, now=at(21))
    hold_release(hold=hold, actor=SVC, now=at(22))
    assert reported() == []
    moved_to_lot(LedgerEntry.objects.get(hold=hold, kind="release"), ledger["free"].pk)

    assert f"hold_lot: {hold.public_id}" in "\n".join(reported())


def test_a_voided_lot_that_keeps_its_credits_is_a_breach(ledger):
    paid = ledger["paid"]
    raw("UPDATE billing_grant SET voided_at = %s WHERE id = %s", [at(30), paid.pk])

    assert f"voided_lot: grant {paid.pk}" in "\n".join(reported())


def test_credits_expired_from_a_lot_that_has_not_lapsed_are_a_breach(ledger):
    """An expiry run at the wrong time: the lot, the cached balance and the entry agree."""
    account, free = ledger["account"], Grant.objects.get(pk=ledger["free"].pk)
    raw("UPDATE billing_grant SET remaining = 0 WHERE id = %s", [free.pk])
    raw(
        "UPDATE accounts_account SET available_credits = available_credits - %s WHERE id = %s",
        [free.remaining, account.pk],
    )
    raw(
        "INSERT INTO billing_ledgerentry (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,"
        " actor_type, actor_id, reference, created_at)"
        " SELECT id, 'expire', %s, 0, available_credits, held_credits, %s, 'system', 'expiry', '', %s"
        " FROM accounts_account WHERE id = %s",
        [-free.remaining, free.pk, at(40), account.pk],
    )
    entry = LedgerEntry.objects.get(grant=free, kind="expire")

    assert reported() == [
        f"early_expiry: entry {entry.pk}: expired {free.remaining} of lot {free.pk} at {at(40)}, "
        f"which expires at {free.expires_at}"
    ]


def test_debit_entries_without_their_debit_are_a_breach(ledger):
    """Credits taken from a lot with no debit to show or refund for them."""
    debit = ledger["debit"]
    entry = LedgerEntry.objects.get(debit=debit)
    raw("UPDATE billing_ledgerentry SET debit_id = NULL WHERE id = %s", [entry.pk])
    Debit.objects.filter(pk=debit.pk).delete()

    assert f"entry_shape: entry {entry.pk}" in "\n".join(reported())


def test_a_refunded_purchase_whose_credits_were_not_clawed_back_is_a_breach(ledger):
    purchase = ledger["purchase"]
    Purchase.objects.filter(pk=purchase.pk).update(status="refunded", refunded_cents=purchase.amount_cents)

    assert f"purchase_reversal: {purchase.public_id}" in "\n".join(reported())


def test_a_partial_refund_that_clawed_back_too_little_is_a_breach(ledger):
    purchase = ledger["purchase"]  # 115 credits for 1500 cents: 500 cents back take 38 credits back
    Purchase.objects.filter(pk=purchase.pk).update(status="partially_refunded", refunded_cents=500)
    assert f"purchase_reversal: {purchase.public_id}" in "\n".join(reported())

    grant = Grant.objects.get(pk=purchase.grant_id)
    Grant.objects.filter(pk=grant.pk).update(remaining=grant.remaining - 38)
    Account.objects.filter(pk=purchase.account_id).update(available_credits=F("available_credits") - 38)
    Purchase.objects.filter(pk=purchase.pk).update(clawed_back_credits=38)
    raw(
        "INSERT INTO billing_ledgerentry (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,"
        " actor_type, actor_id, reference, created_at)"
        " SELECT id, 'clawback', -38, 0, available_credits, held_credits, %s, 'system', 'stripe', '', %s"
        " FROM accounts_account WHERE id = %s",
        [grant.pk, at(40), purchase.account_id],
    )
    assert reported() == []


def test_a_purchase_marked_refunded_with_no_money_recorded_back_is_a_breach(ledger):
    purchase = ledger["purchase"]
    Purchase.objects.filter(pk=purchase.pk).update(status="refunded")

    assert f"purchase_reversal: {purchase.public_id}" in "\n".join(reported())


def test_a_recorded_answer_naming_a_debit_the_ledger_lacks_is_a_breach(ledger):
    """A retry with the key would be told its debit was made."""
    key = IdempotencyKey.objects.get(scope=KEY.scope, key=KEY.key)
    made = key.response_body["id"]
    Debit.objects.filter(public_id=made).update(public_id="deb_other")
    expected = f"recorded_answer: key {KEY.scope}:{KEY.key}"

    assert expected in "\n".join(reported())
    assert expected in "\n".join(map(str, ledger_breaches(account_ids=[ledger["account"].pk])))
    other = make_account(now=T0)
    assert ledger_breaches(account_ids=[other.pk]) == []


def test_a_recorded_answer_for_other_credits_than_its_debit_is_a_breach(ledger):
    key = IdempotencyKey.objects.get(scope=KEY.scope, key=KEY.key)
    IdempotencyKey.objects.filter(pk=key.pk).update(response_body={**key.response_body, "credits": 5})

    assert f"recorded_answer: key {KEY.scope}:{KEY.key}" in "\n".join(reported())
