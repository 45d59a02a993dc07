"""POST /api/v1/accounts/{acct}/suspend and /reactivate: the generation service's safety system
suspends and reactivates accounts, with an Idempotency-Key, audited with the key as the actor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accounts.models import Account, ServiceKey
from accounts.services import hash_key
from billing.models import Grant
from billing.services.ledger import account_settle, hold_create
from console.models import AuditRecord
from notifications.models import Event
from tests.billing.factories import STAFF, give, make_account
from tests.test_openapi import assert_documented, schema

__all__ = ["schema"]  # the published document, as tests/test_openapi.py reads it

pytestmark = pytest.mark.django_db


def test_suspend_answers_the_account_and_audits_the_key(api, service_key):
    account = make_account()
    answer = api.post(f"/accounts/{account.public_id}/suspend", {"reason": "csam detector hit"}, idem="s-1")
    assert answer.status_code == 200
    assert answer.json() == {"account": account.public_id, "status": "suspended", "status_reason": "csam detector hit"}
    key = ServiceKey.objects.get(key_hash=hash_key(service_key))
    record = AuditRecord.objects.get()
    assert (record.actor_type, record.staff_user, record.action, record.account_id) == (
        "service",
        None,
        "suspend",
        account.pk,
    )
    assert record.actor == f"service key {key.pk} {key.name}" and record.reason == "csam detector hit"
    assert Event.objects.filter(account=account, type="account.suspended").count() == 1


def test_a_suspended_account_cannot_spend_keeps_its_holds_and_gets_no_free_credits(api):
    start = datetime(2026, 3, 10, tzinfo=UTC)
    account = make_account(now=start, free=True)
    account_settle(account=account, actor=STAFF, now=start)
    give(account, 10)
    hold = hold_create(account=account, credits=4, expires_in=3600, actor=STAFF)
    assert api.post(f"/accounts/{account.public_id}/suspend", {"reason": "policy"}).status_code == 200

    spend = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    hold_again = api.post(f"/accounts/{account.public_id}/holds", {"credits": 1, "reference": "r"})
    assert [spend.status_code, hold_again.status_code] == [403, 403]
    assert spend.json()["error"]["code"] == hold_again.json()["error"]["code"] == "account_suspended"
    assert api.post(f"/holds/{hold.public_id}/release").json()["status"] == "released"

    free_before = Grant.objects.filter(account=account, source="free_monthly").count()
    account_settle(account=account, actor=STAFF, now=start + timedelta(days=40))
    assert Grant.objects.filter(account=account, source="free_monthly").count() == free_before


def test_a_retry_with_the_same_key_replays_and_moves_nothing(api):
    account = make_account()
    first = api.post(f"/accounts/{account.public_id}/suspend", {"reason": "policy"}, idem="k-1")
    api.post(f"/accounts/{account.public_id}/reactivate", {"reason": "appeal"}, idem="k-2")
    again = api.post(f"/accounts/{account.public_id}/suspend", {"reason": "policy"}, idem="k-1")
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Account.objects.get(pk=account.pk).status == "active"  # the replay suspended nothing
    assert list(AuditRecord.objects.order_by("id").values_list("action", flat=True)) == ["suspend", "reactivate"]
    reused = api.post(f"/accounts/{account.public_id}/suspend", {"reason": "other"}, idem="k-1")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"


def test_suspending_a_suspended_account_changes_and_records_nothing(api):
    account = make_account(status="suspended")
    answer = api.post(f"/accounts/{account.public_id}/suspend", {"reason": "again"})
    assert answer.status_code == 200 and answer.json()["status"] == "suspended"
    assert not AuditRecord.objects.exists()


@pytest.mark.parametrize(
    "body, idem, status, code",
    [
        ({"reason": "x"}, None, 400, "idempotency_key_required"),
        ({}, "auto", 400, "validation_error"),
        ({"reason": "   "}, "auto", 400, "validation_error"),
        ({"reason": "x", "extra": 1}, "auto", 400, "validation_error"),
        ({"reason": 5 * "x" * 1000}, "auto", 400, "validation_error"),
    ],
)
def test_bad_requests_are_clear_errors_and_change_nothing(api, body, idem, status, code):
    account = make_account()
    answer = api.post(f"/accounts/{account.public_id}/suspend", body, idem=idem)
    assert answer.status_code == status and answer.json()["error"]["code"] == code
    assert Account.objects.get(pk=account.pk).status == "active" and not AuditRecord.objects.exists()


def test_unknown_accounts_and_non_service_callers_are_refused(api, user_api, anon):
    assert api.post("/accounts/acct_nosuch/suspend", {"reason": "x"}).json()["error"]["code"] == "not_found"
    account = make_account()
    token_api, _ = user_api
    assert token_api.post(f"/accounts/{account.public_id}/suspend", {"reason": "x"}).status_code == 403
    assert anon.post(f"/accounts/{account.public_id}/suspend", {"reason": "x"}).status_code == 401
    assert Account.objects.get(pk=account.pk).status == "active"


def test_reactivate_lets_the_account_spend_again(api):
    account = make_account(status="suspended")
    give(account, 5)
    answer = api.post(f"/accounts/{account.public_id}/reactivate", {"reason": "false positive"})
    assert answer.json()["status"] == "active"
    assert api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"}).status_code == 201
    assert AuditRecord.objects.get().action == "reactivate"


def test_the_answers_match_the_published_document(schema, api, anon):
    account = make_account()
    path = "/api/v1/accounts/{account_id}/suspend"
    for answer in (
        api.post(f"/accounts/{account.public_id}/suspend", {"reason": "policy"}),
        api.post(f"/accounts/{account.public_id}/suspend", {}),
        api.post(f"/accounts/{account.public_id}/suspend", {"reason": "x"}, idem=None),
        api.post("/accounts/acct_nosuch/suspend", {"reason": "x"}),
        anon.post(f"/accounts/{account.public_id}/suspend", {"reason": "x"}),
    ):
        assert_documented(schema, "post", path, answer)
    assert "Idempotency-Key" in {p["name"] for p in schema["paths"][path]["post"]["parameters"]}
