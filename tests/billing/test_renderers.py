"""The hot paths render bodies with plain functions; they must equal the documented serializers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Grant
from billing.selectors import balance_get
from billing.serializers import BalanceOut, DebitOut, HoldOut, balance_data, debit_data, hold_data
from billing.services.ledger import Actor, debit_create, debit_refund, hold_capture, hold_create
from tests.billing.factories import give

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


def plain(data):  # type: ignore[no-untyped-def]
    return json.loads(json.dumps(data))


def test_debit_data_is_the_debit_serializer(account):
    debit = debit_create(account=account, credits=2, reference="r", metadata={"a": [1]}, actor=ACTOR)
    assert debit_data(debit, account.available_credits, account.held_credits) == plain(DebitOut(debit).data)
    debit = debit_refund(debit=debit, actor=ACTOR)
    debit.account.refresh_from_db()
    assert debit.refunded_at is not None
    assert debit_data(debit, debit.account.available_credits, 0) == plain(DebitOut(debit).data)


def test_hold_data_is_the_hold_serializer(account):
    hold = hold_create(account=account, credits=3, expires_in=60, reference="h", actor=ACTOR)
    assert hold_data(hold) == plain(HoldOut(hold).data)
    hold = hold_capture(hold=hold, credits=2, actor=ACTOR)
    assert hold.settled_at is not None
    assert hold_data(hold) == plain(HoldOut(hold).data)


def test_balance_data_is_the_balance_serializer(account):
    now = timezone.now()
    give(account, 5, source=Grant.Source.PURCHASE, expires_at=now + timedelta(days=300))
    give(account, 3, source=Grant.Source.PROMO, expires_at=now + timedelta(days=3))
    balance = balance_get(account=account, now=now)
    assert len(balance.grants) == 3
    assert balance_data(balance) == plain(BalanceOut(balance).data)
