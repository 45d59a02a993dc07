"""The billing page's notification and auto-recharge settings, driven in headless Chromium
against the live server (the page and its two forms), with screenshots in tests/artifacts/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connections
from django.test import Client
from playwright.sync_api import Page, expect, sync_playwright

from accounts.models import User
from billing.models import CreditPack
from notifications.models import AutoRecharge, NotificationPreferences
from notifications.services.preferences import effective_threshold
from tests.billing.factories import give, make_account
from tests.test_web_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

PASSWORD = "correct-horse-battery"


@pytest.fixture
def page(monkeypatch) -> Iterator[Page]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop on this thread
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1000, "height": 900}, locale="en-US")
            context.set_default_timeout(15_000)
            yield context.new_page()
        finally:
            browser.close()
            connections.close_all()


def holder_with_card():  # type: ignore[no-untyped-def]
    account = make_account()
    give(account, 30)
    user = User.objects.get(pk=account.user_id)
    user.set_password(PASSWORD)
    user.save()
    # A card saved through a SetupIntent (tests/notifications/test_auto_recharge.py does it
    # against localstripe): what it leaves behind.
    AutoRecharge.objects.create(
        account=account, stripe_payment_method_id="pm_saved", card_brand="visa", card_last4="4242"
    )
    return account


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_user_sets_notifications_and_auto_recharge_on_the_billing_page(live_server, page):
    CreditPack.objects.get_or_create(
        slug="credits-115", defaults={"name": "115 credits", "credits": 115, "price_cents": 1500, "currency": "usd"}
    )
    account = holder_with_card()
    page.goto(f"{live_server.url}/login")
    page.get_by_label("Email").fill(account.user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/billing")

    section = page.locator("#notification-settings")
    expect(section.get_by_role("heading", name="Notifications and auto-recharge")).to_be_visible()
    expect(section.get_by_test_id("saved-card")).to_contain_text("Visa ending 4242")
    expect(section.get_by_label("My credits run low")).to_be_checked()

    # Emails: a threshold of its own and one kind switched off.
    section.get_by_label("Warn me when my credits fall below (credits)").fill("25")
    section.get_by_label("A purchase is paid").uncheck()
    section.get_by_role("button", name="Save notification settings").click()
    expect(page.get_by_test_id("settings-message")).to_have_text("Notification settings saved.")
    expect(section.get_by_label("A purchase is paid")).not_to_be_checked()
    expect(section.get_by_label("Warn me when my credits fall below (credits)")).to_have_value("25")
    prefs = NotificationPreferences.objects.get(account=account)
    assert prefs.emails_off == ["purchase.paid"] and prefs.low_balance_threshold_credits == 25
    assert effective_threshold(account=account) == 25

    # Auto-recharge: a cap below one pack is refused and said so; a good one is saved.
    section.get_by_label("Recharge automatically").check()
    section.get_by_label("When credits fall below (credits)").fill("20")
    section.get_by_label("Spend at most a month (USD)").fill("5")
    section.get_by_role("button", name="Save auto-recharge").click()
    expect(page.get_by_test_id("settings-message")).to_contain_text("The monthly cap must allow at least one pack")
    expect(page.get_by_role("alert").filter(has_text="monthly cap")).to_be_visible()
    assert AutoRecharge.objects.get(account=account).enabled is False
    page.locator("#notification-settings").screenshot(path=str(ARTIFACTS / "notifications-settings-refused.png"))

    section.get_by_label("Recharge automatically").check()
    section.get_by_label("When credits fall below (credits)").fill("20")
    section.get_by_label("Spend at most a month (USD)").fill("45.00")
    section.get_by_role("button", name="Save auto-recharge").click()
    expect(page.get_by_test_id("settings-message")).to_have_text("Auto-recharge settings saved.")
    expect(section.get_by_label("Recharge automatically")).to_be_checked()
    saved = AutoRecharge.objects.get(account=account)
    assert (saved.enabled, saved.threshold_credits, saved.monthly_cap_cents) == (True, 20, 4500)
    page.screenshot(path=str(ARTIFACTS / "notifications-billing-page.png"), full_page=True)
    page.locator("#notification-settings").screenshot(path=str(ARTIFACTS / "notifications-settings.png"))


@pytest.mark.django_db
def test_bad_settings_posts_come_back_to_the_page_with_the_error_not_a_500():
    account = make_account()
    client = Client()
    client.force_login(account.user)
    answer = client.post("/billing/notifications", {"low_balance_threshold": "-3"}, follow=True)
    assert answer.status_code == 200 and b"Ensure this value is greater than or equal to 0" in answer.content
    answer = client.post("/billing/auto-recharge", {"pack": "nope", "threshold_credits": "x"}, follow=True)
    assert answer.status_code == 200 and b"Select a valid choice" in answer.content
    answer = client.post(
        "/billing/auto-recharge",
        {"enabled": "on", "pack": "credits-115", "threshold_credits": "10", "monthly_cap_dollars": "30"},
        follow=True,
    )
    assert b"Save a card first" in answer.content  # no card saved
    assert not AutoRecharge.objects.filter(account=account, enabled=True).exists()
    assert Client().post("/billing/notifications", {}).status_code == 302  # to the login page
