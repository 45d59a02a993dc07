"""The pack and purchase routes through HTTP: every new error code, and bad input never a 500."""

from __future__ import annotations

import pytest
from django.conf import settings

from accounts.models import Account
from billing.models import CreditPack, Purchase
from tests.billing.stripe_support import pending_purchase
from tests.billing.test_api_errors import assert_error

pytestmark = pytest.mark.django_db

BUY_ROUTES = ["/me/checkout", "/me/payment-intents"]


def test_anyone_lists_the_active_packs(anon, pack):
    CreditPack.objects.create(slug="old-pack", name="Old", credits=10, price_cents=200, active=False)
    response = anon.get("/packs")
    assert response.status_code == 200
    assert response.json() == {
        "data": [{"id": "credits-115", "name": "115 credits", "credits": 115, "price_cents": 1500, "currency": "usd"}]
    }


def test_the_migration_and_the_seed_command_both_make_the_115_credit_pack(db):
    from importlib import import_module

    from django.apps import apps
    from django.core.management import call_command

    CreditPack.objects.all().delete()
    import_module("billing.migrations.0004_seed_credit_pack").seed(apps, None)
    made = CreditPack.objects.get(slug="credits-115")
    assert (made.credits, made.price_cents, made.currency, made.active) == (115, 1500, "usd", True)
    CreditPack.objects.all().delete()
    call_command("seed")
    call_command("seed")  # again: nothing new
    assert CreditPack.objects.filter(slug="credits-115", credits=115, price_cents=1500).count() == 1


@pytest.mark.parametrize("route", BUY_ROUTES)
def test_buying_without_stripe_configured_is_503_payments_unavailable(user_api, pack, route, settings):
    settings.STRIPE_SECRET_KEY = ""
    api, _ = user_api
    error = assert_error(api.post(route, {"pack": "credits-115"}, idem=None), 503, "payments_unavailable")
    assert "not configured" in error["message"]
    assert Purchase.objects.count() == 0


@pytest.mark.parametrize("route", BUY_ROUTES)
def test_a_suspended_account_cannot_buy(recorder, user_api, pack, route):
    api, user = user_api
    Account.objects.filter(user=user).update(status=Account.Status.SUSPENDED)
    assert_error(api.post(route, {"pack": "credits-115"}, idem=None), 403, "account_suspended")
    assert Purchase.objects.count() == 0 and recorder.requests == []


@pytest.mark.parametrize("route", BUY_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"pack": "no-such-pack"},
        {"pack": "99999"},
        {"pack": "9" * 40},
        {"pack": "\u00b2"},  # a superscript two: a digit to str.isdigit, not to int()
        {"pack": "\u0661\u0662"},  # Arabic-Indic digits: no pack's id
        {"pack": "0"},
        {"pack": 1},
        {"pack": None},
        {"pack": ["credits-115"]},
        {"pack": "credits-115", "quantity": 0},
        {"pack": "credits-115", "quantity": settings.PURCHASE_MAX_QUANTITY + 1},
        {"pack": "credits-115", "quantity": "2"},
        {"pack": "credits-115", "quantity": 1.5},
        {"pack": "credits-115", "quantity": True},
        {"pack": "credits-115", "quantity": 10**30},
        {"pack": "credits-115", "price_cents": 1},
        {"pack": "x" * 10_000},
        {"pack": "a\u0000b"},
    ],
)
def test_bad_input_is_a_validation_error(recorder, user_api, pack, route, body):
    api, _ = user_api
    assert_error(api.post(route, body, idem=None), 400, "validation_error")
    assert Purchase.objects.count() == 0 and recorder.requests == []


@pytest.mark.parametrize("route", BUY_ROUTES)
@pytest.mark.parametrize("raw", ["{", "[]", '"pack"', "null", "\udcff"])
def test_malformed_json_is_a_validation_error(recorder, user_api, pack, route, raw):
    api, _ = user_api
    assert_error(api.post(route, raw=raw.encode("utf-8", "surrogatepass"), idem=None), 400, "validation_error")


def test_an_inactive_pack_cannot_be_bought(recorder, user_api, pack):
    CreditPack.objects.filter(pk=pack.pk).update(active=False)
    api, _ = user_api
    error = assert_error(api.post("/me/checkout", {"pack": "credits-115"}, idem=None), 400, "validation_error")
    assert error["fields"] == {"pack": ["Unknown or inactive pack 'credits-115'."]}


@pytest.mark.parametrize("route", BUY_ROUTES)
def test_buying_needs_an_end_user(anon, api, pack, route, stripe_keys):
    assert_error(anon.post(route, {"pack": "credits-115"}, idem=None), 401, "authentication_failed")
    assert_error(api.post(route, {"pack": "credits-115"}, idem=None), 403, "permission_denied")


@pytest.mark.parametrize("route", BUY_ROUTES)
def test_buying_refuses_other_methods(user_api, route):
    api, _ = user_api
    assert api.get(route).status_code == 405


def test_me_purchases_lists_only_my_own_newest_first(user_api, pack):
    api, user = user_api
    mine = Account.objects.get(user=user)
    older = pending_purchase(pack, account=mine)
    newer = pending_purchase(pack, account=mine, flow="checkout", quantity=2)
    pending_purchase(pack)  # someone else's
    response = api.get("/me/purchases")
    assert response.status_code == 200
    data = response.json()["data"]
    assert [p["id"] for p in data] == [newer.public_id, older.public_id]
    assert data[0] == {
        "id": newer.public_id,
        "pack": "credits-115",
        "quantity": 2,
        "credits": 230,
        "amount_cents": 3000,
        "currency": "usd",
        "status": "pending",
        "refunded_cents": 0,
        "clawed_back_credits": 0,
        "created_at": data[0]["created_at"],
        "paid_at": None,
        "expires_at": None,
    }


def test_me_purchases_needs_an_end_user(anon, api):
    assert_error(anon.get("/me/purchases"), 401, "authentication_failed")
    assert_error(api.get("/me/purchases"), 403, "permission_denied")


def test_requests_are_not_wrapped_in_one_transaction():
    # The webhook commits the raw event before processing it, and the buy routes call Stripe
    # between commits: a request-wide transaction would undo both.
    assert not settings.DATABASES["default"].get("ATOMIC_REQUESTS", False)
