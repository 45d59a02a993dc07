"""While the waitlist is on, signup (API and page) needs a valid, unused, unexpired invitation,
and a token works once, even for two signups racing with it."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.ids import row_public_id
from accounts.models import Account, User
from billing.models import Grant
from tests.concurrency import run_concurrently
from waitlist.models import Invitation, WaitlistEntry
from waitlist.services import entries_admit, entries_remove, invitation_token, waitlist_join

PASSWORD = "correct-horse-battery"


def invite(email: str) -> tuple[Invitation, str]:
    entry, _ = waitlist_join(email=email)
    (pk,) = entries_admit(entry_ids=[entry.pk], by="ops@example.com")
    invitation = Invitation.objects.get(pk=pk)
    return invitation, invitation_token(invitation)


def signup(client: Client, email: str, invitation: str | None = None):  # type: ignore[no-untyped-def]
    body = {"email": email, "password": PASSWORD}
    if invitation is not None:
        body["invitation"] = invitation
    return client.post("/api/v1/auth/signup", json.dumps(body), content_type="application/json")


@pytest.mark.django_db
class TestApi:
    def test_without_an_invitation_signup_is_refused(self, waitlist_on):
        response = signup(Client(), "ada@example.com")
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], error["reason"]) == ("invitation_required", "missing")
        assert "waitlist" in error["message"]
        assert not User.objects.exists()

    def test_a_valid_invitation_signs_up_once(self, waitlist_on):
        invitation, token = invite("ada@example.com")
        response = signup(Client(), "ada@example.com", token)
        assert response.status_code == 201, response.content
        invitation.refresh_from_db()
        assert invitation.used_at is not None and invitation.used_by == User.objects.get()
        again = signup(Client(), "bob@example.com", token)
        assert again.status_code == 403 and again.json()["error"]["reason"] == "used"
        assert User.objects.count() == 1

    @pytest.mark.parametrize("token", ["forged", "1:not-the-signature", ""])
    def test_a_forged_token_is_refused(self, waitlist_on, token):
        invite("ada@example.com")
        response = signup(Client(), "ada@example.com", token)
        assert response.status_code == 403
        assert response.json()["error"]["reason"] == ("missing" if token == "" else "invalid")
        assert not User.objects.exists()

    def test_an_expired_invitation_is_refused(self, waitlist_on):
        invitation, token = invite("ada@example.com")
        Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        response = signup(Client(), "ada@example.com", token)
        assert response.status_code == 403 and response.json()["error"]["reason"] == "expired"

    def test_a_removed_entrys_invitation_no_longer_works(self, waitlist_on):
        invitation, token = invite("ada@example.com")
        entries_remove(entry_ids=[invitation.entry_id])
        response = signup(Client(), "ada@example.com", token)
        assert response.status_code == 403 and response.json()["error"]["reason"] == "invalid"

    def test_an_invitation_used_with_its_own_email_verifies_it(self, waitlist_on, settings):
        settings.EMAIL_VERIFICATION_REQUIRED = True
        _, token = invite("ada@example.com")
        body = signup(Client(), "Ada@Example.com", token).json()
        assert body["user"]["email_verified_at"] is not None
        assert body["balance"]["available"] == 50

    def test_another_email_must_still_be_verified(self, waitlist_on, settings):
        settings.EMAIL_VERIFICATION_REQUIRED = True
        _, token = invite("ada@example.com")
        body = signup(Client(), "ada.work@example.com", token).json()
        assert body["user"]["email_verified_at"] is None
        assert body["balance"]["available"] == 0

    def test_while_the_waitlist_is_off_no_invitation_is_needed(self, settings):
        settings.WAITLIST_ENABLED = False
        assert signup(Client(), "ada@example.com").status_code == 201


def race_two_signups(token: str, emails: list[str]) -> list[int]:
    """Two API signups with one token, started together from two threads; their statuses."""
    return sorted(run_concurrently(len(emails), lambda i: signup(Client(), emails[i], token).status_code))


@pytest.mark.django_db(transaction=True)
def test_two_signups_racing_with_one_token_make_one_user(waitlist_on):
    _, token = invite("ada@example.com")
    assert race_two_signups(token, ["racer-a@example.com", "racer-b@example.com"]) == [201, 403]
    assert race_two_signups(token, ["racer-c@example.com", "racer-d@example.com"]) == [403, 403]
    assert User.objects.count() == 1 and Account.objects.count() == 1
    assert Grant.objects.count() == 1  # the one account's free credits, nobody else's


@pytest.mark.django_db
class TestPage:
    def test_without_an_invitation_the_page_sends_people_to_the_waitlist(self, waitlist_on):
        response = Client().get("/signup")
        assert response.status_code == 302 and response["Location"] == "/waitlist"
        page = Client().get("/waitlist").content.decode()
        assert "Signups are by invitation" in page

    def test_the_invitation_link_signs_up(self, waitlist_on):
        _, token = invite("ada@example.com")
        client = Client()
        page = client.get("/signup", {"invitation": token})
        assert page.status_code == 200 and f'type="hidden" name="invitation" value="{token}"' in page.content.decode()
        assert "Invitation</label>" not in page.content.decode()  # carried, not shown
        form = {"email": "ada@example.com", "password": PASSWORD, "password_again": PASSWORD, "invitation": token}
        response = client.post("/signup", form)
        assert response.status_code == 302, response.content.decode()
        assert User.objects.filter(email="ada@example.com").exists()
        again = Client().post("/signup", {**form, "email": "bob@example.com"})
        assert again.status_code == 400
        assert "This invitation was used already." in again.content.decode()
        assert not User.objects.filter(email="bob@example.com").exists()

    def test_a_posted_signup_without_an_invitation_is_refused_on_the_page(self, waitlist_on):
        form = {"email": "ada@example.com", "password": PASSWORD, "password_again": PASSWORD}
        response = Client().post("/signup", form)
        assert response.status_code == 400
        assert "Signups are by invitation" in response.content.decode()
        assert not User.objects.exists()


@pytest.mark.django_db
def test_an_operator_can_invite_again_once_an_invitation_expired():
    invitation, _ = invite("ada@example.com")
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(days=1))
    assert entries_admit(entry_ids=[invitation.entry_id], by="ops") != []
    assert entries_admit(entry_ids=[invitation.entry_id], by="ops") == []  # the new one is open
    assert WaitlistEntry.objects.get().invitation.expires_at > timezone.now()


@pytest.mark.django_db
def test_an_invitations_token_names_it_by_public_id_not_row_id():
    invitation, token = invite("ada@example.com")
    named = token.split(":")[0]
    assert named == row_public_id("inv_", invitation.pk)  # the row id permuted, as every public id
