"""The /waitlist page: join, and a clear answer for already waiting, invited, or registered."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from waitlist.models import WaitlistEntry
from waitlist.services import entries_admit, waitlist_join

pytestmark = pytest.mark.django_db


def post(email: str, addr: str = "198.51.100.7"):  # type: ignore[no-untyped-def]
    return Client().post("/waitlist", {"email": email}, REMOTE_ADDR=addr)


def test_the_page_offers_the_form():
    page = Client().get("/waitlist").content.decode()
    assert 'name="email"' in page and "Join the waitlist" in page


def test_joining_then_joining_again(waitlist_on):
    first = post("ada@example.com")
    assert first.status_code == 200 and "You are on the waitlist" in first.content.decode()
    again = post("ADA@example.com").content.decode()
    assert "You are already on the waitlist" in again
    assert WaitlistEntry.objects.count() == 1


def test_an_invited_person_is_told_so(waitlist_on):
    entry, _ = waitlist_join(email="ada@example.com")
    entries_admit(entry_ids=[entry.pk], by="ops")
    page = post("ada@example.com").content.decode()
    assert "You are invited!" in page and "We emailed the link" in page


def test_someone_with_an_account_is_sent_to_log_in(waitlist_on):
    User.objects.create_user(email="ada@example.com", password="x" * 12)
    page = post("ada@example.com").content.decode()
    assert "This email already has an account" in page
    assert not WaitlistEntry.objects.exists()


def test_a_malformed_email_is_a_400_with_the_field_marked():
    response = post("not an email")
    assert response.status_code == 400 and "Enter a valid email address." in response.content.decode()
    assert not WaitlistEntry.objects.exists()


def test_the_page_is_limited_per_client_address(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "waitlist": 2}
    assert [post(f"p{n}@example.com").status_code for n in range(3)] == [200, 200, 429]
    assert "Too many attempts" in post("late@example.com").content.decode()
    assert post("other@example.com", addr="203.0.113.9").status_code == 200


def test_while_signups_are_open_the_page_says_so(settings):
    settings.WAITLIST_ENABLED = False
    assert "Signups are open right now" in Client().get("/waitlist").content.decode()
