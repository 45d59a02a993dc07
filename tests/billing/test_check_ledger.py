"""`manage.py check_ledger`: silent success on a clean ledger, exit 1 naming each breach.

The corruptions below go behind the ledger service's back with raw SQL on the tables it guards
(never on the append-only ledger itself, which the database refuses to change).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import Account
from billing.models import Debit, Grant, Hold
from billing.services.ledger import Actor, debit_create, free_grant_ensure, hold_capture, hold_create
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db

T0 = datetime(2030, 1, 10, 12, 0, 0, tzinfo=UTC)
SVC = Actor("service", "1")


def raw(sql: str, params: list[object]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1


@pytest.fixture
def busy_account():
    """An account with grants, a debit, a captured hold and a pending hold."""
    account = make_account(now=T0)
    give(account, 10, now=T0)
    give(account, 5, expires_at=T0 + timedelta(days=30), now=T0)
    debit = debit_create(account=account, credits=2, actor=SVC, now=T0 + timedelta(seconds=1))
    captured = hold_create(account=account, credits=3, expires_in=900, actor=SVC, now=T0 + timedelta(seconds=2))
    hold_capture(hold=captured, credits=1, actor=SVC, now=T0 + timedelta(seconds=3))
    pending = hold_create(account=account, credits=4, expires_in=900, actor=SVC, now=T0 + timedelta(seconds=4))
    return account, debit, pending


def test_a_clean_ledger_passes_with_exit_0(busy_account, run_check_ledger):
    code, out = run_check_ledger()

    assert code == 0, out
    assert "ledger ok" in out
    assert "BROKEN" not in out


def test_a_changed_cached_available_balance_is_a_breach(busy_account, run_check_ledger):
    account, _, _ = busy_account
    raw("UPDATE accounts_account SET available_credits = available_credits + 1 WHERE id = %s", [account.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert "ledger BROKEN" in out
    assert f"account_available: {account.public_id}" in out


def test_a_changed_cached_held_balance_is_a_breach(busy_account, run_check_ledger):
    account, _, _ = busy_account
    raw("UPDATE accounts_account SET held_credits = 0 WHERE id = %s", [account.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert f"account_held: {account.public_id}" in out


def test_a_changed_grant_remaining_is_a_breach(busy_account, run_check_ledger):
    account, _, _ = busy_account
    grant = Grant.objects.filter(account=account, remaining__gt=0).order_by("id").first()
    raw("UPDATE billing_grant SET remaining = remaining - 1 WHERE id = %s", [grant.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert f"grant_remaining: grant {grant.pk}" in out


def test_a_changed_hold_status_is_a_breach(busy_account, run_check_ledger):
    _, _, pending = busy_account
    raw("UPDATE billing_hold SET status = 'released' WHERE id = %s", [pending.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert f"hold: {pending.public_id}" in out


def test_a_changed_captured_amount_is_a_breach(busy_account, run_check_ledger):
    account, _, _ = busy_account
    captured = Hold.objects.get(account=account, status=Hold.Status.CAPTURED)
    raw("UPDATE billing_hold SET captured_credits = 3 WHERE id = %s", [captured.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert f"hold: {captured.public_id}" in out


def test_a_debit_marked_refunded_without_refund_entries_is_a_breach(busy_account, run_check_ledger):
    _, debit, _ = busy_account
    raw("UPDATE billing_debit SET refunded_at = %s WHERE id = %s", [T0 + timedelta(minutes=5), debit.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    assert f"debit: {debit.public_id}" in out
    assert Debit.objects.get(pk=debit.pk).refunded_at is not None


def test_every_breach_is_reported_not_just_the_first(busy_account, run_check_ledger):
    account, debit, pending = busy_account
    raw("UPDATE accounts_account SET available_credits = available_credits + 1 WHERE id = %s", [account.pk])
    raw("UPDATE billing_hold SET status = 'released' WHERE id = %s", [pending.pk])
    raw("UPDATE billing_debit SET refunded_at = %s WHERE id = %s", [T0, debit.pk])

    code, out = run_check_ledger()

    assert code == 1, out
    for expected in (
        f"account_available: {account.public_id}",
        f"hold: {pending.public_id}",
        f"debit: {debit.public_id}",
    ):
        assert expected in out


def test_account_option_checks_only_the_named_account(busy_account):
    broken, _, _ = busy_account
    clean = make_account(now=T0)
    give(clean, 3, now=T0)
    raw("UPDATE accounts_account SET available_credits = available_credits + 1 WHERE id = %s", [broken.pk])

    out = StringIO()
    call_command("check_ledger", "--account", clean.public_id, stdout=out)
    assert "ledger ok" in out.getvalue()

    out = StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("check_ledger", "--account", broken.public_id, stdout=out)
    assert exc.value.code == 1
    assert f"account_available: {broken.public_id}" in out.getvalue()


def test_an_unknown_account_is_a_command_error(db):
    with pytest.raises(CommandError, match="acct_unknown"):
        call_command("check_ledger", "--account", "acct_unknown", stdout=StringIO())


def test_check_ledger_names_an_account_whose_free_period_lags_its_grants(run_check_ledger):
    account = make_account(now=datetime(2027, 3, 5, tzinfo=UTC), free=True)
    free_grant_ensure(account=account, actor=Actor.system("test"), now=datetime(2027, 3, 6, tzinfo=UTC))
    assert run_check_ledger()[0] == 0
    Account.objects.filter(pk=account.pk).update(free_period_start=None)

    code, out = run_check_ledger()

    assert code == 1
    assert f"free_period: {account.public_id}" in out
