"""A confirmation sent twice at the same moment (a double click, two tabs) is carried out once:
real threads against PostgreSQL, each with its own connection."""

from __future__ import annotations

import pytest

from billing.models import Grant
from console.models import AuditRecord
from console.services import AlreadyCarriedOut, Operator, credits_grant
from tests.billing.factories import make_account
from tests.concurrency import run_concurrently

from .conftest import operator

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_two_concurrent_submissions_of_one_confirmation_grant_once():
    account = make_account()
    staff = Operator.staff(operator("race@example.com", superuser=True))

    def submit(_: int) -> str:
        try:
            credits_grant(operator=staff, account=account, credits=10, reason="double click", confirmation="c" * 64)
        except AlreadyCarriedOut:
            return "already"
        return "granted"

    outcomes = run_concurrently(2, submit)

    assert sorted(outcomes) == ["already", "granted"]
    assert Grant.objects.filter(account=account).count() == 1 and AuditRecord.objects.count() == 1
    account.refresh_from_db()
    assert account.available_credits == 10
