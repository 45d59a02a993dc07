"""The engine renders the API's debit, hold and balance shapes (billing_debit_json,
billing_hold_json, billing.selectors.balance_json); they must equal the documented serializers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Debit, Grant, Hold, IdempotencyKey
from billing.selectors import balance_get, balance_json, hold_json
from billing.serializers import BalanceOut, DebitOut, HoldOut
from billing.services.ledger import (
    Actor,
    debit_refund_recorded,
    debit_spend,
    hold_capture_recorded,
    hold_create,
)
from tests.billing.factories import give

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


def plain(data):  # type: ignore[no-untyped-def]
    return json.loads(json.dumps(data))


def test_the_debit_body_is_the_debit_serializer(account):
    give(account, 5)
    body = debit_spend(
        account=account.public_id,
        credits=2,
        operation="",
        reference="r",
        metadata={"a": [1], "b": "é"},
        actor=ACTOR,
        now=timezone.now(),
    ).made()
    debit = Debit.objects.select_related("account").get(public_id=body["id"])
    assert list(body) == list(DebitOut(debit).data)  # the same fields, in the same order
    assert body == plain(DebitOut(debit).data)
    refunded = debit_refund_recorded(debit=debit.public_id, actor=ACTOR, now=timezone.now()).made()
    debit.refresh_from_db()
    debit.account.refresh_from_db()
    assert debit.refunded_at is not None
    assert refunded == plain(DebitOut(debit).data)


def test_the_hold_body_is_the_hold_serializer(account):
    give(account, 5)
    hold = hold_create(account=account, credits=3, expires_in=60, reference="h", actor=ACTOR)
    assert hold_json(hold.public_id) == plain(HoldOut(hold).data)
    captured = hold_capture_recorded(hold=hold.public_id, credits=2, actor=ACTOR, now=timezone.now()).made()
    hold = Hold.objects.select_related("account").get(pk=hold.pk)
    assert hold.settled_at is not None
    assert list(captured) == list(HoldOut(hold).data)
    assert captured == plain(HoldOut(hold).data) == hold_json(hold.public_id)


def test_the_balance_body_is_the_balance_serializer(account):
    now = timezone.now()
    give(account, 5, source=Grant.Source.PURCHASE, expires_at=now + timedelta(days=300))
    give(account, 3, source=Grant.Source.PROMO, expires_at=now + timedelta(days=3))
    give(account, 4)
    balance = balance_get(account=account, now=now)
    assert len(balance.grants) == 4  # with the account fixture's own lot
    body = balance_json(account.public_id, now)
    assert body is not None
    assert json.loads(body) == plain(BalanceOut(balance).data)


def test_a_movement_answers_the_text_its_function_rendered(api, account):
    """The API sends the body billing_debit or billing_hold rendered as it is (its spacing is
    PostgreSQL's); a client that asks for another rendering gets DRF's, of the same object."""
    give(account, 5)
    debit = api.post(f"/accounts/{account.public_id}/debits", {"credits": 1, "reference": "r"})
    assert debit.status_code == 201 and debit["Content-Type"] == "application/json"
    assert debit.content.startswith(b'{"id" : "deb_')  # json_build_object's text, not DRF's
    assert debit.json() == IdempotencyKey.objects.get(key__startswith="test-").response_body
    indented = api.post(
        f"/accounts/{account.public_id}/holds",
        {"credits": 1, "reference": "h", "expires_in": 60},
        headers={"Accept": "application/json; indent=2"},
    )
    assert indented.status_code == 201 and indented.content.startswith(b'{\n  "id": "hold_')
    hold = Hold.objects.select_related("account").get(public_id=indented.json()["id"])
    assert indented.json() == plain(HoldOut(hold).data)
