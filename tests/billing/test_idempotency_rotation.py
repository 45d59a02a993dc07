"""Idempotency across a rotation of service keys: the generation service may retry a request with
a new key after rotating the old one; the retry must replay the first answer, not charge again."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.services import service_key_create
from billing.models import IdempotencyKey
from tests.billing.factories import give, make_account
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def test_a_retry_sent_with_a_rotated_service_key_replays_and_charges_once():
    account = make_account()
    give(account, 10)
    old, new = Api(service_key_create(name="gen")[1]), Api(service_key_create(name="gen-rotated")[1])
    path = f"/accounts/{account.public_id}/debits"
    body = {"credits": 3, "reference": "img-42"}

    first = old.post(path, body, idem="rotation-retry-1")
    retry = new.post(path, body, idem="rotation-retry-1")

    assert first.status_code == 201
    assert retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    account.refresh_from_db()
    assert account.available_credits == 7


def test_keys_recorded_per_service_key_before_the_change_move_to_the_shared_scope():
    """The migration's statement (billing/migrations/0024): a request recorded under its key's
    own scope replays after the change; of two keys with one text, the first recorded moves."""
    merge = importlib.import_module("billing.migrations.0024_one_service_scope").MERGE
    now = timezone.now()

    def recorded(scope: str, key: str, seconds_ago: int) -> IdempotencyKey:
        made = now - timedelta(seconds=seconds_ago)
        return IdempotencyKey.objects.create(
            scope=scope, key=key, request_hash="h", status_code=201, response_body={}, created_at=made
        )

    alone = recorded("svc:1", "a", 0)
    first, second = recorded("svc:2", "b", 60), recorded("svc:3", "b", 0)
    taken_before, shared_already = recorded("svc:4", "c", 0), recorded("svc", "c", 0)
    user = recorded("user:9", "d", 0)
    with connection.cursor() as cursor:
        cursor.execute(merge)
    scopes = dict(IdempotencyKey.objects.values_list("id", "scope"))
    assert scopes[alone.id] == "svc"
    assert (scopes[first.id], scopes[second.id]) == ("svc", "svc:3")
    assert (scopes[taken_before.id], scopes[shared_already.id]) == ("svc:4", "svc")
    assert scopes[user.id] == "user:9"
