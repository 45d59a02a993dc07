from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_debit_spends_one_credit_for_a_generation(api, account, assert_ledger_clean):
    response = api.post(f"/accounts/{account.public_id}/debits", {"operation": "generation", "reference": "req-1"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["credits"] == 1
    assert body["balance"] == {"available": 9, "held": 0}
    balance = api.get(f"/accounts/{account.public_id}/balance").json()
    assert balance["available"] == 9
    assert balance["free"] == 9 and balance["paid"] == 0
    assert_ledger_clean()
