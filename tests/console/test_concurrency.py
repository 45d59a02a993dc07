"""A confirmation sent twice at the same moment (a double click, two tabs) is carried out once:
real threads against PostgreSQL, each with its own connection."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from billing.models import Grant
from console.models import AuditRecord
from console.services import AlreadyCarriedOut, Operator, credits_grant
from tests.billing.factories import make_account

from .conftest import operator

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_two_concurrent_submissions_of_one_confirmation_grant_once():
    account = make_account()
    staff = Operator.staff(operator("race@example.com", superuser=True))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def submit() -> None:
        try:
            barrier.wait()
            credits_grant(operator=staff, account=account, credits=10, reason="double click", confirmation="c" * 64)
            outcomes.append("granted")
        except AlreadyCarriedOut:
            outcomes.append("already")
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["already", "granted"]
    assert Grant.objects.filter(account=account).count() == 1 and AuditRecord.objects.count() == 1
    account.refresh_from_db()
    assert account.available_credits == 10
