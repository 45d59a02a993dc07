"""Auto-recharge's settings changed while spends cross the threshold, with real threads against
PostgreSQL, each with its own connection. The interleaving is forced: the settings change holds
its row until the spend is seen waiting on a lock, then goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from notifications.models import AutoRecharge, Recharge
from notifications.services import recharge
from tests.billing.factories import give, make_account
from tests.concurrency import run_concurrently, wait_until_another_backend_waits_on_a_lock
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def race_settings_change_with_a_crossing_spend(change: Callable[[Any], object], account: Any, api: Api) -> None:
    """`change(account)` takes its settings row; the spend (an API debit) starts once it has,
    crosses the threshold and so reaches for the same row; only then does `change` write the
    account row. The debit must be answered 201."""
    settings_locked = threading.Event()
    original = recharge._threshold_column

    def held_threshold_column(account_id: int, credits: int) -> None:
        settings_locked.set()
        wait_until_another_backend_waits_on_a_lock()
        original(account_id, credits)

    def work(index: int) -> None:
        if index == 0:
            change(account)
        else:
            assert settings_locked.wait(10), "the settings change never took its row"
            response = api.post(f"/accounts/{account.public_id}/debits", {"credits": 2, "reference": "generation"})
            assert response.status_code == 201, response.content

    recharge._threshold_column = held_threshold_column  # type: ignore[assignment]
    try:
        run_concurrently(2, work)
    finally:
        recharge._threshold_column = original  # type: ignore[assignment]


@pytest.fixture
def recharging(pack):
    """An account with 11 credits, auto-recharge on at a threshold of 10 with a saved card."""
    account = make_account()
    give(account, 11)
    AutoRecharge.objects.create(
        account=account,
        enabled=True,
        pack=pack,
        threshold_credits=10,
        monthly_cap_cents=3000,
        stripe_payment_method_id="pm_card_visa",
    )
    recharge._threshold_column(account.pk, 10)
    return account


def test_switching_auto_recharge_off_while_a_spend_crosses_the_threshold_does_not_deadlock(
    recharging, api, assert_ledger_clean
):
    account = recharging
    race_settings_change_with_a_crossing_spend(lambda a: recharge.auto_recharge_disable(account=a), account, api)

    account.refresh_from_db()
    assert account.available_credits == 9
    assert not Recharge.objects.filter(account=account).exists()  # off before the crossing committed
    assert AutoRecharge.objects.get(account=account).enabled is False
    assert_ledger_clean()


def test_changing_the_threshold_while_a_spend_crosses_it_queues_one_recharge_without_deadlock(
    recharging, pack, api, assert_ledger_clean
):
    account = recharging

    def configure(a: Any) -> None:
        recharge.auto_recharge_configure(account=a, pack=pack, threshold_credits=10, monthly_cap_cents=4500)

    race_settings_change_with_a_crossing_spend(configure, account, api)

    account.refresh_from_db()
    assert account.available_credits == 9
    assert Recharge.objects.filter(account=account, status=Recharge.Status.QUEUED).count() == 1
    assert AutoRecharge.objects.get(account=account).monthly_cap_cents == 4500
    assert_ledger_clean()
