"""The "one of these values" checks (config/constraints.py): the database refuses any other value
(on update; on insert for the append-only ledger), and Django's own validation of a model
refuses it the same way."""

from __future__ import annotations

from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Account
from billing.models import Grant, Hold, LedgerEntry
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db


def refused(write) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        write()
    return caught.value.__cause__.diag.constraint_name  # type: ignore[union-attr]


def rows() -> dict[str, tuple[object, str]]:
    account = make_account()
    give(account, 5)
    hold = Hold.objects.create(
        public_id="hold_value_checks", account=account, credits=1, status="pending", expires_at=timezone.now()
    )
    return {
        "account_status_valid": (Account.objects.get(pk=account.pk), "status"),
        "grant_source_valid": (Grant.objects.get(account=account), "source"),
        "hold_status_valid": (hold, "status"),
        "ledger_kind_valid": (LedgerEntry.objects.get(account=account), "kind"),
    }


@pytest.mark.parametrize("bad", ["closed", "", "Active", "active ", "active|suspended", "{active}", "grant,debit"])
def test_each_check_refuses_another_value(bad):
    for name, (row, field) in rows().items():
        model = type(row)
        if model is LedgerEntry:  # append-only: an entry is only ever inserted
            setattr(row, field, bad)
            row.pk = None
            assert refused(partial(row.save, force_insert=True)) == name
        else:
            assert refused(partial(model.objects.filter(pk=row.pk).update, **{field: bad})) == name


def test_django_validates_each_check_as_the_database_does():
    """(The database accepting each value: every kind of grant, hold and entry the suite writes.)"""
    for name, (row, field) in rows().items():
        constraint = next(c for c in type(row)._meta.constraints if c.name == name)
        values = constraint.condition.rhs
        for value in values:
            setattr(row, field, value)
            constraint.validate(type(row), row)  # Django's check, run by the database as a query
        setattr(row, field, "none_of_them")
        with pytest.raises(ValidationError):
            constraint.validate(type(row), row)
