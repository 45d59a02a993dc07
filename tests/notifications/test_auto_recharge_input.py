"""Auto-recharge's routes refuse bad input in the documented error shape, before Stripe is asked."""

from __future__ import annotations

import pytest

from notifications.models import AutoRecharge

pytestmark = pytest.mark.django_db

GOOD = {"pack": "credits-115", "threshold_credits": 10, "monthly_cap_cents": 3000}


def put(api, body):  # type: ignore[no-untyped-def]
    return api.client.put(
        "/api/v1/me/auto-recharge", body, content_type="application/json", headers=api._headers(None, None)
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD, "pack": "nope"}, "pack"),
        ({**GOOD, "pack": 115}, "pack"),
        ({**GOOD, "pack": "\u00b2"}, "pack"),  # a superscript two: a digit to str.isdigit, not to int()
        ({**GOOD, "pack": "\u0661\u0662"}, "pack"),  # Arabic-Indic digits: no pack's id
        ({**GOOD, "threshold_credits": 0}, "threshold_credits"),
        ({**GOOD, "threshold_credits": "10"}, "threshold_credits"),
        ({**GOOD, "threshold_credits": 10**7}, "threshold_credits"),
        ({**GOOD, "monthly_cap_cents": 1499}, "monthly_cap_cents"),  # below one pack
        ({**GOOD, "monthly_cap_cents": 15.5}, "monthly_cap_cents"),
        ({**GOOD, "monthly_cap_cents": 10**9}, "monthly_cap_cents"),
        ({**GOOD, "enabled": "yes"}, "enabled"),
        ({**GOOD, "card": "pm_card_visa"}, "card"),
        ({"pack": "credits-115"}, "threshold_credits"),
        (GOOD, "card"),  # no card saved yet
    ],
)
def test_bad_settings_are_refused_with_the_field_named(buyer, body, field):
    api, account = buyer
    answer = put(api, body)
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"], error
    assert not AutoRecharge.objects.filter(account=account, enabled=True).exists()


def test_settings_without_a_card_can_be_saved_switched_off_and_read_back(buyer):
    api, _ = buyer
    answer = put(api, {**GOOD, "enabled": False})
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "enabled": False,
        "pack": "credits-115",
        "threshold_credits": 10,
        "monthly_cap_cents": 3000,
        "spent_this_month_cents": 0,
        "card": None,
        "consecutive_failures": 0,
        "disabled_reason": "",
    }
    assert api.get("/me/auto-recharge").json() == answer.json()
    off = api.client.delete("/api/v1/me/auto-recharge", headers=api._headers(None, None))
    assert off.status_code == 200 and off.json()["disabled_reason"] == "switched off by the user"


@pytest.mark.parametrize(
    "body", [{}, {"setup_intent": "pi_123"}, {"setup_intent": 5}, {"setup_intent": "seti_1", "x": 1}]
)
def test_a_card_needs_a_setup_intent_id(buyer, body, recorder):
    api, _ = buyer
    answer = api.post("/me/auto-recharge/card", body, idem=None)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "validation_error", answer.content
    assert recorder.requests == []  # Stripe was not asked


def test_saving_a_card_without_payments_configured_is_503(buyer):
    api, _ = buyer
    answer = api.post("/me/auto-recharge/setup-intent", idem=None)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "payments_unavailable"


def test_service_keys_and_strangers_cannot_reach_a_users_auto_recharge(api, anon):
    assert api.get("/me/auto-recharge").status_code == 403
    assert anon.get("/me/auto-recharge").status_code == 401
    assert anon.get("/me/notifications").status_code == 401
