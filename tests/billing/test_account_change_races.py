"""An operator changing an account's quota overrides while it spends, and the account suspended
and reactivated while its holds are captured, through the real routes with real threads
against PostgreSQL (each its own connection)."""

from __future__ import annotations

from collections import Counter

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Account, User
from billing.models import Debit, Hold
from billing.services.ledger import hold_create
from tests.billing.factories import STAFF, give, make_account
from tests.concurrency import run_concurrently
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_quota_overrides_changed_while_the_account_spends_keep_its_counters_and_balance(
    service_key, assert_ledger_clean
):
    account = make_account()
    give(account, 200)
    root = User.objects.create_superuser(email="quota-race@example.com", password="x" * 12)
    url = reverse("admin:accounts_accountquota_change", args=[account.pk])
    forms = [
        {"rate_limit_per_minute": "", "rate_limit_burst": "", "daily_cap_credits": "30"},
        {"rate_limit_per_minute": "0", "rate_limit_burst": "5", "daily_cap_credits": "25"},
    ]

    def work(index: int) -> list[int]:
        if index == 0:
            client = Client()
            client.force_login(root)
            return [client.post(url, {**forms[n % 2], "_save": "Save"}).status_code for n in range(10)]
        api = Api(service_key)
        path = f"/accounts/{account.public_id}/debits"
        return [api.post(path, {"credits": 1, "reference": f"{index}-{n}"}).status_code for n in range(20)]

    admin, *spenders = run_concurrently(4, work)
    assert admin == [302] * 10
    statuses = Counter(status for replies in spenders for status in replies)
    assert set(statuses) <= {201, 429} and sum(statuses.values()) == 60, statuses
    account.refresh_from_db()
    made = statuses[201]
    # The overrides are the last form's; the spend counters and balances are the spends'.
    assert (account.rate_limit_per_minute, account.rate_limit_burst, account.daily_cap_credits) == (0, 5, 25)
    assert Debit.objects.filter(account=account).count() == made == account.day_spent
    assert made <= 30
    assert (account.available_credits, account.held_credits) == (200 - made, 0)
    assert_ledger_clean()


def test_holds_captured_while_the_account_is_suspended_and_reactivated_are_each_charged_once(
    service_key, assert_ledger_clean
):
    account = make_account()
    give(account, 100)
    holds = [hold_create(account=account, credits=5, expires_in=900, actor=STAFF) for _ in range(12)]

    def work(index: int) -> list[int]:
        api = Api(service_key)
        if index == 0:
            return [
                api.post(f"/accounts/{account.public_id}/{action}", {"reason": "policy"}).status_code
                for _ in range(6)
                for action in ("suspend", "reactivate")
            ]
        mine = holds[index - 1 :: 3]
        return [api.post(f"/holds/{hold.public_id}/capture", {"credits": 3}).status_code for hold in mine]

    switches, *captures = run_concurrently(4, work)
    assert switches == [200] * 12
    assert [status for replies in captures for status in replies] == [200] * 12
    account.refresh_from_db()
    assert account.status == Account.Status.ACTIVE
    assert Hold.objects.filter(account=account, status="captured", captured_credits=3).count() == 12
    assert (account.available_credits, account.held_credits) == (100 - 12 * 3, 0)
    assert_ledger_clean()
