"""The waitlist and email verification pages in headless Chromium (Playwright) against the live
server: join, join again, get invited, sign up with the emailed link; and a signup that waits
for its email to be verified. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from playwright.sync_api import Page, expect

from tests.test_web_browser import ARTIFACTS, page  # noqa: F401 - the Chromium page fixture
from waitlist.models import WaitlistEntry
from waitlist.services import entries_admit
from waitlist.tasks import invitations_email

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery"


def shot(page: Page, name: str) -> None:  # noqa: F811
    page.screenshot(path=str(ARTIFACTS / f"waitlist-{name}.png"), full_page=True)


def emailed_link(to: str) -> str:
    (message,) = [m for m in mail.outbox if m.to == [to]]
    (link,) = re.findall(r"http://\S+", message.body)
    return link


@pytest.fixture
def site(live_server, settings, eager_tasks) -> str:
    settings.SITE_URL = live_server.url
    return live_server.url


def join(page: Page, site: str, email: str) -> None:  # noqa: F811
    page.goto(f"{site}/waitlist")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Join the waitlist").click()


def test_join_wait_get_invited_and_sign_up(page: Page, site: str, settings) -> None:  # noqa: F811
    settings.WAITLIST_ENABLED = True
    page.goto(f"{site}/signup")
    expect(page).to_have_url(f"{site}/waitlist")
    expect(page.get_by_text("Signups are by invitation")).to_be_visible()

    join(page, site, "ada@example.com")
    expect(page.get_by_role("status")).to_contain_text("You are on the waitlist.")
    shot(page, "joined")
    join(page, site, "Ada@Example.com")
    expect(page.get_by_role("status")).to_contain_text("You are already on the waitlist")
    shot(page, "already-waiting")

    # An operator admits the entry (the admin's action): its invitation is emailed.
    invitations_email(entries_admit(entry_ids=WaitlistEntry.objects.values_list("pk", flat=True), by="ops"))
    join(page, site, "ada@example.com")
    expect(page.get_by_role("status")).to_contain_text("You are invited!")
    shot(page, "invited")

    page.goto(emailed_link("ada@example.com"))
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    # The invitation reached this mailbox, so the email counts as verified: credits at once.
    expect(page).to_have_url(f"{site}/billing")
    expect(page.locator("main")).to_contain_text("50")
    shot(page, "signed-up")


def test_a_signup_waits_for_its_email(page: Page, site: str, settings) -> None:  # noqa: F811
    settings.EMAIL_VERIFICATION_REQUIRED = True
    page.goto(f"{site}/signup")
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(f"{site}/verify-email")
    expect(page.get_by_role("heading")).to_have_text("Check your inbox")
    shot(page, "verify-pending")

    page.goto(emailed_link("bob@example.com"))
    expect(page.get_by_role("button", name="Verify my email")).to_be_visible()
    shot(page, "verify-confirm")
    page.get_by_role("button", name="Verify my email").click()
    expect(page.get_by_role("status")).to_contain_text("your free credits are on your account")
    shot(page, "verified")
    page.get_by_role("link", name="Go to your billing page").click()
    expect(page.locator("main")).to_contain_text("50")
