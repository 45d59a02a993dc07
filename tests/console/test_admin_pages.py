"""Finding an account and what its page shows; pages open by public id; and no admin path (a
change form, a bulk delete, a forged POST) changes a ledger row, a grant's amount or a balance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import DatabaseError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account
from billing.models import Debit, Grant, Hold, LedgerEntry, Purchase, StripeCustomer
from billing.services.ledger import debit_create, hold_create
from console.models import AuditRecord
from tests.billing.factories import STAFF, give, make_account
from tests.billing.stripe_support import pending_purchase
from tests.billing.test_purchases import fulfil

from .conftest import confirm

pytestmark = pytest.mark.django_db


def money_rows() -> dict[str, Any]:
    return {
        "entries": list(LedgerEntry.objects.order_by("id").values()),
        "grants": list(Grant.objects.order_by("id").values("id", "amount", "remaining", "expires_at")),
        "accounts": list(Account.objects.order_by("id").values("id", "available_credits", "held_credits", "status")),
        "debits": list(Debit.objects.order_by("id").values()),
        "holds": list(Hold.objects.order_by("id").values()),
        "purchases": list(Purchase.objects.order_by("id").values()),
    }


@pytest.fixture
def busy_account(pack) -> Account:
    account = make_account()
    give(account, 40, priority=5)
    debit_create(account=account, credits=3, actor=STAFF, reference="img-1")
    hold_create(account=account, credits=2, expires_in=600, actor=STAFF, reference="img-2")
    fulfil(pending_purchase(pack, account=account))
    StripeCustomer.objects.create(account=account, stripe_customer_id="cus_console_test")
    account.refresh_from_db()
    return account


def listed(client, **params: str) -> list[str]:  # type: ignore[no-untyped-def]
    page = client.get(reverse("admin:accounts_account_changelist"), params)
    assert page.status_code == 200
    return [row.public_id for row in page.context["cl"].result_list]


def test_an_account_is_found_by_email_id_stripe_customer_and_purchase(root_client, busy_account):
    make_account()
    purchase = Purchase.objects.get(account=busy_account)
    for term in (
        busy_account.user.email,
        busy_account.user.email.upper(),
        busy_account.public_id,
        "cus_console_test",
        purchase.public_id,
        busy_account.user.email.split("@")[0],
    ):
        assert listed(root_client, q=term) == [busy_account.public_id], term
    assert listed(root_client, q="pur_nosuchpurchase") == []


def test_the_list_filters_by_status_and_paid_credits_and_shows_the_split(root_client, busy_account):
    plain = make_account()
    give(plain, 7)
    Account.objects.filter(pk=plain.pk).update(status="suspended")
    assert listed(root_client, paid="yes") == [busy_account.public_id]
    assert listed(root_client, status__exact="suspended") == [plain.public_id]
    page = root_client.get(reverse("admin:accounts_account_changelist"), {"q": busy_account.public_id})
    (row,) = page.context["cl"].result_list
    assert (row.available_credits, row.held_credits, row.free_credits, row.paid_credits) == (150, 2, 35, 115)


def test_the_account_page_shows_credits_grants_entries_holds_debits_purchases_and_audit(root_client, busy_account):
    confirm(
        root_client,
        reverse("admin:accounts_account_grant", args=[busy_account.public_id]),
        {"credits": 10, "reason": "sorry for the outage"},
    )
    page = root_client.get(reverse("admin:accounts_account_change", args=[busy_account.public_id]))
    assert page.status_code == 200
    panels = page.context["panels"]
    # Spend order: the purchase lot expires, the never-expiring ones last, lower priority first.
    assert [g.source for g in panels.grants] == ["purchase", "adjustment", "adjustment"]
    assert [g.priority for g in panels.grants][1:] == [5, 60]  # 60: an adjustment's default
    assert (panels.free_credits, panels.paid_credits) == (45, 115)
    assert [e.kind for e in panels.entries] == ["grant", "grant", "hold", "debit", "grant"]
    body = page.content.decode()
    purchase = Purchase.objects.get(account=busy_account)
    for link in (
        reverse("admin:billing_purchase_change", args=[purchase.public_id]),
        reverse("admin:billing_hold_change", args=[Hold.objects.get(account=busy_account).public_id]),
        reverse("admin:billing_debit_change", args=[Debit.objects.get(account=busy_account).public_id]),
        reverse("admin:billing_ledgerentry_changelist") + f"?account__id__exact={busy_account.pk}",
        reverse("admin:console_auditrecord_change", args=[AuditRecord.objects.get().pk]),
    ):
        assert link in body, link
    assert "sorry for the outage" in body and "root@example.com" in body
    everything = root_client.get(
        reverse("admin:billing_ledgerentry_changelist"), {"account__id__exact": busy_account.pk}
    )
    assert everything.status_code == 200
    assert {e.account_id for e in everything.context["cl"].result_list} == {busy_account.pk}


@pytest.mark.parametrize("model", ["purchase", "debit", "hold", "account"])
def test_admin_pages_open_by_public_id(root_client, busy_account, model):
    obj = {
        "purchase": Purchase.objects.get(account=busy_account),
        "debit": Debit.objects.get(account=busy_account),
        "hold": Hold.objects.get(account=busy_account),
        "account": busy_account,
    }[model]
    app = "accounts" if model == "account" else "billing"
    page = root_client.get(f"/admin/{app}/{model}/{obj.public_id}/change/")
    assert page.status_code == 200 and page.context["original"].pk == obj.pk


def test_the_audit_trail_is_read_only_and_append_only_in_the_database(root_client, busy_account):
    confirm(
        root_client,
        reverse("admin:accounts_account_grant", args=[busy_account.public_id]),
        {"credits": 1, "reason": "r"},
    )
    record = AuditRecord.objects.get()
    assert root_client.get(reverse("admin:console_auditrecord_changelist")).status_code == 200
    url = reverse("admin:console_auditrecord_change", args=[record.pk])
    assert root_client.post(url, {"reason": "rewritten"}).status_code == 403
    assert (
        root_client.post(reverse("admin:console_auditrecord_delete", args=[record.pk]), {"post": "yes"}).status_code
        == 403
    )
    with pytest.raises(DatabaseError, match="Cannot update or delete"), transaction.atomic():
        AuditRecord.objects.filter(pk=record.pk).update(reason="rewritten")
    assert AuditRecord.objects.get().reason == "r"


READ_ONLY = [
    "billing_ledgerentry",
    "billing_grant",
    "billing_debit",
    "billing_hold",
    "accounts_account",
    "billing_purchase",
]


@pytest.mark.parametrize("name", READ_ONLY)
def test_no_admin_path_changes_a_money_row_even_for_a_superuser(root_client, busy_account, name):
    app_label, model_name = name.split("_", 1)
    model = {
        "ledgerentry": LedgerEntry,
        "grant": Grant,
        "debit": Debit,
        "hold": Hold,
        "account": Account,
        "purchase": Purchase,
    }[model_name]
    obj = (
        model.objects.filter(pk=busy_account.pk).first()
        if model is Account
        else model.objects.filter(account=busy_account).first()
    )
    before = money_rows()
    forged = {
        "credits": 999,
        "amount": 999,
        "remaining": 999,
        "available_credits": 999,
        "held_credits": 0,
        "balance_after": 999,
        "status": "suspended",
        "refunded_cents": 0,
        "_save": "Save",
    }

    assert root_client.post(reverse(f"admin:{name}_change", args=[obj.pk]), forged).status_code == 403
    assert root_client.post(reverse(f"admin:{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert root_client.get(reverse(f"admin:{name}_add")).status_code == 403
    bulk = root_client.post(
        reverse(f"admin:{name}_changelist"), {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"}
    )
    assert bulk.status_code in (200, 302)

    assert money_rows() == before


def test_forged_action_posts_without_a_confirmation_change_nothing(root_client, busy_account):
    grant = Grant.objects.filter(account=busy_account).first()
    before = money_rows()
    for url, data in (
        (reverse("admin:accounts_account_grant", args=[busy_account.public_id]), {"credits": 50, "reason": "x"}),
        (
            reverse("admin:accounts_account_clawback", args=[busy_account.public_id]),
            {"grant": grant.pk, "credits": 5, "reason": "x"},
        ),
        (reverse("admin:billing_grant_void", args=[grant.pk]), {"reason": "x"}),
        (reverse("admin:accounts_account_suspend", args=[busy_account.public_id]), {"reason": "x"}),
        (
            reverse("admin:billing_purchase_refund", args=[Purchase.objects.get(account=busy_account).public_id]),
            {"reason": "x"},
        ),
    ):
        answer = root_client.post(url, {**data, "confirmation": "made-up"})
        assert answer.status_code == 200 and answer.context["stage"] == "confirm", url
    assert money_rows() == before and not AuditRecord.objects.exists()


def test_a_grant_whose_public_id_holds_what_the_admin_unquotes_opens_by_it(root_client, busy_account, settings):
    """The admin reads "_23" in a path as "#": with the key below, the grant's id starts "grt_23"."""
    from accounts.ids import row_public_id

    grant = Grant.objects.filter(account=busy_account).first()
    for n in range(10_000):
        settings.PUBLIC_ID_KEY = f"test-key-{n}"
        if row_public_id("grt_", grant.pk).startswith("grt_23"):
            break
    path = f"/admin/billing/grant/{row_public_id('grt_', grant.pk)}/change/"

    page = root_client.get(path)

    assert page.status_code == 200 and page.context["original"].pk == grant.pk, path


def test_grants_and_ledger_entries_open_by_their_public_ids(root_client, busy_account):
    from accounts.ids import row_public_id

    grant = Grant.objects.filter(account=busy_account).first()
    entry = LedgerEntry.objects.filter(account=busy_account).first()
    for path, obj in (
        (f"/admin/billing/grant/{row_public_id('grt_', grant.pk)}/change/", grant),
        (f"/admin/billing/ledgerentry/{row_public_id('le_', entry.pk)}/change/", entry),
    ):
        page = root_client.get(path)
        assert page.status_code == 200 and page.context["original"].pk == obj.pk, path
    assert root_client.get("/admin/billing/grant/grt_00000000000/change/").status_code == 302  # none: the list


def test_a_public_id_that_looks_quoted_to_the_admin_still_opens_its_page(root_client, pack):
    # The admin reads "_4F" in a path as "O"; ids are random, so some contain such a sequence.
    purchase = pending_purchase(pack)
    Purchase.objects.filter(pk=purchase.pk).update(public_id="pur_4Fquoted0000000000")
    page = root_client.get("/admin/billing/purchase/pur_4Fquoted0000000000/change/")
    assert page.status_code == 200 and page.context["original"].pk == purchase.pk
    refund = root_client.get("/admin/billing/purchase/pur_4Fquoted0000000000/refund/")
    assert refund.status_code == 200 and refund.context["original"].pk == purchase.pk


def test_the_account_page_settles_the_account_before_showing_its_credits(root_client):
    now = timezone.now()
    account = make_account()
    give(account, 40, expires_at=now + timedelta(hours=1), now=now)
    give(account, 10, now=now)
    with time_machine.travel(now + timedelta(hours=2), tick=False):
        page = root_client.get(reverse("admin:accounts_account_change", args=[account.public_id]))
    html = page.content.decode()
    assert '<strong data-testid="available">10</strong>' in html  # not the cached 50
    assert '<span data-testid="free">10</span>' in html
    assert LedgerEntry.objects.filter(account=account, kind="expire").get().credits == -40
