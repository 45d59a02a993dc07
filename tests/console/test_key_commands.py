"""`manage.py create_service_key` and `revoke_service_key` leave the same audit record as the
admin's actions, naming the system user who ran them and the reason given."""

from __future__ import annotations

import getpass
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ServiceKey
from console.models import AuditRecord

pytestmark = pytest.mark.django_db


def test_a_key_made_and_revoked_from_the_command_line_is_in_the_audit_trail():
    out = StringIO()
    call_command("create_service_key", "generation", "--reason", "new deployment", stdout=out)
    raw = out.getvalue().strip().splitlines()[-1]
    key = ServiceKey.objects.get(name="generation")

    call_command("revoke_service_key", raw[:10], stdout=StringIO())

    created, revoked = AuditRecord.objects.order_by("id")
    assert (created.action, created.reason, created.details) == ("create_key", "new deployment", {"name": "generation"})
    assert (revoked.action, revoked.reason) == ("revoke_key", "revoked from the command line")
    for record in (created, revoked):
        assert record.actor_type == AuditRecord.ActorType.COMMAND and record.staff_user is None
        assert f" by {getpass.getuser()}@" in record.actor
        assert record.target == f"service key {key.pk} {key.prefix}"


def test_a_blank_reason_is_refused_and_nothing_is_made():
    with pytest.raises(CommandError, match="--reason"):
        call_command("create_service_key", "generation", "--reason", "  ", stdout=StringIO())
    assert not ServiceKey.objects.exists() and not AuditRecord.objects.exists()
