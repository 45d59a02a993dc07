"""Service keys are checked against the shared cache on the hot path; revocation clears it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import ServiceKey, User
from accounts.services import service_key_create, service_key_revoke
from tests.conftest import Api

pytestmark = pytest.mark.django_db


def test_a_recently_checked_key_costs_no_query(account):
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/ledger"
    assert api.get(path).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        assert api.get(path).status_code == 200

    assert queries.captured_queries
    assert not [q for q in queries.captured_queries if "accounts_servicekey" in q["sql"]]


def test_a_balance_read_is_one_statement_with_the_key_cached(account):
    _, raw = service_key_create(name="gen")
    api = Api(raw)
    path = f"/accounts/{account.public_id}/balance"
    assert api.get(path).status_code == 200

    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path).status_code == 200
        [statement] = [q["sql"] for q in queries.captured_queries]
        assert "billing_spendable_lots" in statement and "accounts_servicekey" not in statement


def test_a_key_revoked_by_the_service_is_refused_at_once_even_when_cached(account):
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200

    service_key_revoke(key=key)

    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 401


def test_a_key_revoked_from_the_admin_is_refused_at_once_even_when_cached(client, account):
    key, raw = service_key_create(name="gen")
    api = Api(raw)
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 200
    client.force_login(User.objects.create_superuser(email="ops@example.com", password="x" * 12))

    response = client.post(
        reverse("admin:accounts_servicekey_changelist"), {"action": "revoke", "_selected_action": [key.pk]}
    )

    assert response.status_code == 302
    assert ServiceKey.objects.get(pk=key.pk).revoked_at is not None
    assert api.get(f"/accounts/{account.public_id}/balance").status_code == 401
