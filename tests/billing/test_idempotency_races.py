"""One Idempotency-Key sent at the same moment to different routes (each on its own account, so
no account lock orders them) and with different bodies: the key moves credits or changes an
account once, every other request is a replay or a 409, and none is a 5xx. Real threads against
PostgreSQL, each with its own test client and connection."""

from __future__ import annotations

import pytest

from accounts.models import Account
from billing.models import Debit, Hold, IdempotencyKey
from billing.services.ledger import debit_create
from console.models import AuditRecord
from tests.billing.factories import STAFF, give, make_account
from tests.concurrency import run_concurrently
from tests.conftest import Api

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_one_key_sent_at_once_to_four_routes_and_two_bodies_acts_once(service_key, assert_ledger_clean):
    accounts = [make_account() for _ in range(4)]
    for account in accounts:
        give(account, 10)
    spent = debit_create(account=accounts[3], credits=2, actor=STAFF, reference="to refund")
    key = "one-key-for-everything"
    requests = [
        (f"/accounts/{accounts[0].public_id}/debits", {"credits": 1, "reference": "a"}),
        (f"/accounts/{accounts[0].public_id}/debits", {"credits": 2, "reference": "a"}),
        (f"/accounts/{accounts[1].public_id}/holds", {"credits": 1, "reference": "b"}),
        (f"/accounts/{accounts[1].public_id}/holds", {"credits": 1, "reference": "b"}),
        (f"/accounts/{accounts[2].public_id}/suspend", {"reason": "policy"}),
        (f"/accounts/{accounts[2].public_id}/suspend", {"reason": "another reason"}),
        (f"/debits/{spent.public_id}/refund", {}),
        (f"/debits/{spent.public_id}/refund", {}),
    ]

    def send(index: int) -> tuple[int, str | None, str | None]:
        path, body = requests[index]
        response = Api(service_key).post(path, body, idem=key)
        error = response.json().get("error") if response.status_code >= 400 else None
        return response.status_code, response.headers.get("Idempotent-Replayed"), error and error["code"]

    answers = run_concurrently(len(requests), send)

    assert all(status < 500 for status, _, _ in answers), answers
    made = [a for a in answers if a[0] < 300 and a[1] is None]
    replayed = [a for a in answers if a[1] == "true"]
    refused = [a for a in answers if a[0] >= 400]
    assert len(made) == 1 and len(made) + len(replayed) + len(refused) == len(requests), answers
    assert all(a == (409, None, "idempotency_key_reused") for a in refused), answers
    assert IdempotencyKey.objects.filter(key=key).count() == 1
    moved = (
        Debit.objects.filter(account=accounts[0]).count()
        + Hold.objects.filter(account=accounts[1]).count()
        + Account.objects.filter(pk=accounts[2].pk, status=Account.Status.SUSPENDED).count()
        + AuditRecord.objects.filter(account=accounts[2]).count()
        + Debit.objects.filter(pk=spent.pk, refunded_at__isnull=False).count()
    )
    suspended = Account.objects.filter(pk=accounts[2].pk, status=Account.Status.SUSPENDED).exists()
    assert moved == (2 if suspended else 1), answers
    assert_ledger_clean()
