"""Operators override one account's spend limits in the admin (accounts/admin.py); the
override then decides its spends, and the page changes nothing else of the account."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Account, User
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="root@example.com", password="x" * 12))
    return client


def test_an_operator_sets_an_accounts_own_limits_and_its_spends_follow_them(root, api, settings):
    settings.RATE_LIMIT_ACCOUNT_PER_MINUTE = 0
    account = make_account()
    give(account, 50)
    url = reverse("admin:accounts_accountquota_change", args=[account.pk])
    assert root.get(url).status_code == 200

    form = {"rate_limit_per_minute": "1", "rate_limit_burst": "2", "daily_cap_credits": "", "_save": "Save"}
    forged = {"available_credits": "999", "held_credits": "7", "status": "suspended"}
    assert root.post(url, {**form, **forged}).status_code == 302

    account.refresh_from_db()
    assert (account.rate_limit_per_minute, account.rate_limit_burst, account.daily_cap_credits) == (1, 2, None)
    assert (account.available_credits, account.held_credits, account.status) == (50, 0, "active")
    spends = [api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"}) for _ in range(3)]
    assert [response.status_code for response in spends] == [201, 201, 429]


def test_a_negative_limit_is_refused_by_the_form(root):
    account = make_account()
    url = reverse("admin:accounts_accountquota_change", args=[account.pk])
    page = root.post(url, {"rate_limit_per_minute": "-5", "rate_limit_burst": "0", "daily_cap_credits": "-1"})
    assert page.status_code == 200 and set(page.context["adminform"].form.errors) == {
        "rate_limit_per_minute",
        "rate_limit_burst",
        "daily_cap_credits",
    }
    assert Account.objects.get(pk=account.pk).rate_limit_per_minute is None
