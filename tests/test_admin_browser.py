"""The operator console in headless Chromium (as tests/test_web_browser.py drives the site): a
support operator logs in to /admin/, finds an account by email, grants 10 credits with a reason
through the confirmation page, and sees the entry, the new balance and the audit line; the same
operator is refused a refund with the admin's HTML page; the overview draws its chart.
Screenshots go to tests/artifacts/admin-*.png."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from billing.models import CreditPack, LedgerEntry
from console.models import AuditRecord
from console.roles import SUPPORT
from console.rollup import ledger_rollup
from tests.billing.factories import give, make_account
from tests.billing.stripe_support import pending_purchase
from tests.billing.test_purchases import fulfil
from tests.console.conftest import operator
from tests.test_web_browser import ARTIFACTS, page  # noqa: F401 - the Chromium page fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
PASSWORD = "x" * 12


def shot(page: Page, name: str) -> None:  # noqa: F811
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def log_in(page: Page, base: str, email: str) -> None:  # noqa: F811
    page.goto(f"{base}/admin/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Overview")).to_be_visible()


def test_support_grants_10_credits_is_refused_a_refund_and_sees_the_overview(live_server, page):  # noqa: F811
    pack, _ = CreditPack.objects.get_or_create(
        slug="credits-115", defaults={"name": "115 credits", "credits": 115, "price_cents": 1500, "currency": "usd"}
    )
    account = make_account()
    give(account, 5)
    purchase = fulfil(pending_purchase(pack, account=account))
    operator("support@example.com", role=SUPPORT)
    base = live_server.url

    log_in(page, base, "support@example.com")
    shot(page, "0-index")
    page.locator("tr.model-account").get_by_role("link", name="Accounts").click()
    page.locator("#searchbar").fill(account.user.email)
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=account.public_id).click()
    expect(page.get_by_test_id("available")).to_have_text("120")
    shot(page, "1-account")

    page.get_by_role("link", name="Grant credits").click()
    page.get_by_label("Credits").fill("10")
    page.get_by_label("Reason").fill("Render failed three times")
    page.get_by_role("button", name="Review").click()
    expect(page.get_by_role("heading", name="Please confirm")).to_be_visible()
    expect(page.get_by_test_id("confirm-summary")).to_contain_text("Render failed three times")
    shot(page, "2-confirm")
    page.get_by_role("button", name="Confirm").click()

    expect(page.get_by_text(f"Granted 10 credits to {account.public_id}")).to_be_visible()
    expect(page.get_by_test_id("available")).to_have_text("130")
    newest_entry = page.get_by_test_id("entries").get_by_role("row").nth(1).get_by_role("cell")
    assert newest_entry.all_inner_texts()[1:5] == ["grant", "10", "0", "130"]
    audit_line = page.get_by_test_id("audit").get_by_role("row").nth(1).get_by_role("cell")
    assert audit_line.all_inner_texts()[1:] == [
        "support@example.com",
        "grant",
        account.public_id,
        "10",
        "",
        "Render failed three times",
    ]
    expect(page.get_by_test_id("audit")).to_contain_text("Render failed three times")
    shot(page, "3-granted")
    assert LedgerEntry.objects.filter(account=account, kind="grant", credits=10).count() == 1
    assert AuditRecord.objects.get().staff_user.email == "support@example.com"

    page.get_by_test_id("all-entries").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(3)  # this account's entries only
    shot(page, "4-ledger")

    page.goto(f"{base}/admin/billing/purchase/{purchase.public_id}/change/")
    expect(page.get_by_role("link", name="Refund", exact=True)).to_have_count(0)
    refused = page.goto(f"{base}/admin/billing/purchase/{purchase.public_id}/refund/")
    assert refused is not None and refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    expect(page.get_by_test_id("refusal")).to_contain_text("Your role does not allow this action: Refund pur_")
    shot(page, "5-refund-refused")

    ledger_rollup()
    ledger_rollup()
    page.goto(f"{base}/admin/")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_test_id("overview-chart")).to_be_visible()
    expect(page.get_by_test_id("liability")).to_contain_text("115 unspent paid credits")
    assert page.get_by_test_id("overview-chart").locator("rect").count() > 100
    shot(page, "6-overview")
