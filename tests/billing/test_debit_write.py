"""The debit route's common call answered before DRF's dispatch (billing.api.debit_write).

A plain debit with a service key is made by billing_spend() and answered without DRF; anything
else (another body, content type or outcome, a refused key) is left to DRF's view. These tests
check that the two answer alike, that DRF's view still answers everything else, and that every
call is counted once against the rate limit.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from billing.api import DebitCreateView
from billing.models import Debit, IdempotencyKey
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def _post(key: str, path: str, body: bytes | str, *, idem: str | None, content_type: str = "application/json"):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return Client().post(f"/api/v1{path}", body, content_type=content_type, headers=headers)


def _without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name not in ("id", "created_at")}


def _refuse_drf(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("DRF's dispatch ran")

    monkeypatch.setattr(DebitCreateView, "post", refuse)


def test_the_common_debit_skips_drf_and_answers_what_drf_answers(service_key, monkeypatch):
    account = make_account()
    give(account, 10)
    path = f"/accounts/{account.public_id}/debits"
    body = '{"credits":2,"reference":"gen-1"}'
    through_drf = _post(service_key, path + "?via=drf", body, idem="drf")  # a query string: DRF answers
    _refuse_drf(monkeypatch)
    skipped = _post(service_key, path, body, idem="fast")

    assert (skipped.status_code, through_drf.status_code) == (201, 201)
    assert dict(skipped.headers) == dict(through_drf.headers)
    assert _without_ids(skipped.json()) == {**_without_ids(through_drf.json()), "balance": {"available": 6, "held": 0}}
    assert list(skipped.json()) == list(through_drf.json())  # the same fields in the same order
    debit = Debit.objects.get(public_id=skipped.json()["id"])
    assert (debit.credits, debit.reference, debit.actor_type) == (2, "gen-1", "service")
    stored = IdempotencyKey.objects.get(key="fast")
    assert (stored.status_code, stored.response_body) == (201, skipped.json())
    assert stored.request_hash == IdempotencyKey.objects.get(key="drf").request_hash  # same request


def test_what_the_common_debit_does_not_make_is_answered_by_drf(service_key, settings):
    settings.RATE_LIMITS = {"service": 11, "user": 0, "anon": 0}
    account = make_account()
    give(account, 3)
    path = f"/accounts/{account.public_id}/debits"
    plain = '{"credits":2,"reference":"r"}'

    made = _post(service_key, path, plain, idem="k1")  # 1: made here
    replayed = _post(service_key, path, plain, idem="k1")  # 2: the key is recorded: DRF replays
    assert (made.status_code, replayed.status_code) == (201, 201)
    assert replayed["Idempotent-Replayed"] == "true" and replayed.json() == made.json()
    reused = _post(service_key, path, '{"credits":1,"reference":"r"}', idem="k1")  # 3
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    short = _post(service_key, path, plain, idem="k2")  # 4: 1 credit left: DRF records the 402
    assert short.status_code == 402 and short.json()["error"]["available"] == 1
    assert IdempotencyKey.objects.get(key="k2").status_code == 402
    missing = _post(service_key, path, plain, idem=None)  # 5
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "idempotency_key_required"
    nan = _post(service_key, path, '{"credits":NaN,"reference":"r"}', idem="k3")  # 6
    assert nan.status_code == 400
    with_charset = _post(
        service_key, path, '{"credits":1,"reference":"r"}', idem="k4", content_type="application/json; charset=utf-8"
    )  # 7
    assert with_charset.status_code == 201 and with_charset.json()["balance"]["available"] == 0
    other_type = _post(
        service_key, path, "credits=1&reference=r", idem="k5", content_type="application/x-www-form-urlencoded"
    )  # 8
    assert other_type.status_code == 415
    unknown = _post(service_key, "/accounts/acct_nosuchaccount0000/debits", plain, idem="k6")  # 9: settles: 404
    assert unknown.status_code == 404
    refused = _post("sk_" + "x" * 40, path, plain, idem="k7")  # not counted: the key is refused
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
    assert [_post(service_key, path, plain, idem=f"last{n}").status_code for n in range(3)] == [402, 402, 429]
    assert Debit.objects.filter(account=account).count() == 2


def test_a_debit_with_more_than_the_plain_fields_is_left_to_drf(service_key, monkeypatch):
    account = make_account()
    give(account, 5)
    path = f"/accounts/{account.public_id}/debits"
    api = Api(service_key)
    ran: list[str] = []
    post = DebitCreateView.post

    def watched(self, request, account_id):  # type: ignore[no-untyped-def]
        ran.append(request.data.get("reference"))
        return post(self, request, account_id)

    monkeypatch.setattr(DebitCreateView, "post", watched)
    assert api.post(path, {"credits": 1, "reference": "with", "metadata": {"job": 7}}).status_code == 201
    assert api.post(path, {"credits": 1, "reference": "plain"}).status_code == 201
    assert api.post(path, {"reference": "op", "operation": "generation"}).status_code == 201
    assert ran == ["with"]
