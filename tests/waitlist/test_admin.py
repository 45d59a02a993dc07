"""Operators run the waitlist from the admin: admit, skip, remove, and the weekly quota. Only a
holder of waitlist.decide_waitlistentry (superusers; no role has it) admits, skips, removes or
emails an invitation again."""

from __future__ import annotations

import smtplib

import pytest
from django.apps import apps
from django.contrib import admin
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.urls import reverse

from accounts.models import User
from console.roles import FINANCE, SUPPORT
from tests.console.conftest import logged_in, operator
from waitlist.models import Invitation, WaitlistEntry, WaitlistPolicy
from waitlist.services import entries_admit, waitlist_join

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:waitlist_waitlistentry_changelist"


@pytest.fixture
def ops(client):
    client.force_login(User.objects.create_superuser(email="ops@example.com", password="x" * 12))
    return client


def act(ops, action: str, entries: list[WaitlistEntry]):  # type: ignore[no-untyped-def]
    return ops.post(reverse(CHANGELIST), {"action": action, "_selected_action": [e.pk for e in entries]}, follow=True)


def test_every_waitlist_model_is_in_the_admin_and_renders(ops):
    waitlist_join(email="ada@example.com")
    for model in apps.get_app_config("waitlist").get_models():
        assert admin.site.is_registered(model)
        opts = model._meta
        assert ops.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).status_code == 200


def test_admit_invites_and_emails(ops, eager_tasks, django_capture_on_commit_callbacks):
    ada, _ = waitlist_join(email="ada@example.com")
    bob, _ = waitlist_join(email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        response = act(ops, "admit", [ada])
    assert "Invited 1" in response.content.decode()
    ada.refresh_from_db()
    assert (ada.status, ada.decided_by) == ("invited", "ops@example.com")
    assert WaitlistEntry.objects.get(pk=bob.pk).status == "waiting"
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert "/signup?invitation=" in mail.outbox[0].body
    # Admitting again makes no second invitation while the first is open.
    act(ops, "admit", [ada])
    assert Invitation.objects.count() == 1


def test_skip_leaves_an_entry_out_and_admit_can_still_invite_it(ops):
    ada, _ = waitlist_join(email="ada@example.com")
    act(ops, "skip", [ada])
    assert WaitlistEntry.objects.get(pk=ada.pk).status == "skipped"
    act(ops, "admit", [ada])
    assert WaitlistEntry.objects.get(pk=ada.pk).status == "invited"


def test_remove_deletes_the_entry_and_its_invitation(ops):
    ada, _ = waitlist_join(email="ada@example.com")
    act(ops, "admit", [ada])
    response = act(ops, "remove", [ada])
    assert "Removed" in response.content.decode()
    assert not WaitlistEntry.objects.exists() and not Invitation.objects.exists()


def test_the_weekly_quota_is_edited_in_the_admin(ops):
    WaitlistPolicy.objects.all().delete()  # as after a flush: the list makes the row again
    listing = ops.get(reverse("admin:waitlist_waitlistpolicy_changelist")).content.decode()
    assert "1000" in listing
    url = reverse("admin:waitlist_waitlistpolicy_change", args=[1])
    assert ops.get(url).status_code == 200
    response = ops.post(url, {"weekly_quota": "250"})
    assert response.status_code == 302
    assert WaitlistPolicy.objects.get(pk=1).weekly_quota == 250


class RefusingBackend(BaseEmailBackend):
    """A mail server that refuses every message."""

    def send_messages(self, email_messages):  # type: ignore[no-untyped-def]
        raise smtplib.SMTPServerDisconnected("refused")


def test_an_invitation_the_mail_server_refused_is_retried_logged_and_sent_again_from_the_admin(
    ops, eager_tasks, settings, caplog, django_capture_on_commit_callbacks
):
    ada, _ = waitlist_join(email="ada@example.com")
    settings.EMAIL_BACKEND = "tests.waitlist.test_admin.RefusingBackend"
    with django_capture_on_commit_callbacks(execute=True):
        act(ops, "admit", [ada])  # the task fails six times (eagerly, no waiting)
    assert "could not be emailed" in caplog.text
    invitation = Invitation.objects.get()
    assert invitation.emailed_at is None and not mail.outbox
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    changelist = reverse("admin:waitlist_invitation_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        ops.post(changelist, {"action": "email_again", "_selected_action": [invitation.pk]})
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]
    assert Invitation.objects.get().emailed_at is not None


@pytest.mark.parametrize("role", [SUPPORT, FINANCE, None])
@pytest.mark.parametrize("action", ["admit", "skip", "remove"])
def test_an_operator_without_the_permission_cannot_decide_on_entries(role, action, eager_tasks):
    ada, _ = waitlist_join(email="ada@example.com")
    client = logged_in(operator("staff@example.com", role=role))
    act(client, action, [ada])
    assert WaitlistEntry.objects.get(pk=ada.pk).status == "waiting"
    assert not Invitation.objects.exists() and not mail.outbox


@pytest.mark.parametrize("role", [SUPPORT, FINANCE])
def test_the_view_only_roles_see_the_waitlist_but_are_offered_no_action(role):
    waitlist_join(email="ada@example.com")
    page = logged_in(operator("staff@example.com", role=role)).get(reverse(CHANGELIST))
    assert page.status_code == 200 and "ada@example.com" in page.content.decode()
    assert 'name="action"' not in page.content.decode()


@pytest.mark.parametrize("role", [SUPPORT, FINANCE, None])
def test_an_operator_without_the_permission_cannot_email_an_invitation_again(
    role, eager_tasks, django_capture_on_commit_callbacks
):
    ada, _ = waitlist_join(email="ada@example.com")
    (invitation_id,) = entries_admit(entry_ids=[ada.pk], by="test")  # not emailed yet
    client = logged_in(operator("staff@example.com", role=role))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:waitlist_invitation_changelist"),
            {"action": "email_again", "_selected_action": [invitation_id]},
        )
    assert not mail.outbox and Invitation.objects.get(pk=invitation_id).emailed_at is None
