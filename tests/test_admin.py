from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse

from accounts.models import User
from billing.models import Grant, LedgerEntry
from tests.billing.factories import give, make_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser_client(client):
    user = User.objects.create_superuser(email="ops@example.com", password="x" * 12)
    client.force_login(user)
    return client


def test_every_project_model_is_registered_in_admin():
    for app_label in ("accounts", "billing", "console"):
        for model in apps.get_app_config(app_label).get_models():
            assert admin.site.is_registered(model), f"{model.__name__} is not in admin"


@pytest.mark.parametrize(
    "name",
    [
        "accounts_user",
        "accounts_account",
        "accounts_servicekey",
        "accounts_usertoken",
        "billing_operation",
        "billing_grant",
        "billing_ledgerentry",
        "billing_debit",
        "billing_hold",
        "billing_idempotencykey",
    ],
)
def test_admin_changelists_render(superuser_client, name):
    account = make_account()
    give(account, 5)
    response = superuser_client.get(reverse(f"admin:{name}_changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", [LedgerEntry, Grant])
def test_money_records_are_read_only_even_for_a_superuser(superuser_client, model):
    account = make_account()
    give(account, 5)
    obj = model.objects.filter(account=account).first()
    meta = model._meta
    change_url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    delete_url = reverse(f"admin:{meta.app_label}_{meta.model_name}_delete", args=[obj.pk])
    add_url = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")

    page = superuser_client.get(change_url)
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content

    before = list(model.objects.filter(pk=obj.pk).values())
    assert superuser_client.post(change_url, {"credits": 999, "remaining": 999}).status_code == 403
    assert superuser_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert superuser_client.get(add_url).status_code == 403
    assert list(model.objects.filter(pk=obj.pk).values()) == before


def test_operator_can_change_an_operation_price(superuser_client):
    from billing.models import Operation

    op = Operation.objects.get(code="edit")
    url = reverse("admin:billing_operation_change", args=[op.pk])
    response = superuser_client.post(url, {"code": "edit", "credits": 2, "description": op.description, "active": "on"})
    assert response.status_code == 302
    op.refresh_from_db()
    assert op.credits == 2


def test_a_job_run_page_shows_its_chunks(superuser_client):
    from billing.models import JobRun
    from billing.services.jobs import job_start

    make_account(free=True)
    run = job_start(job=JobRun.Job.REFILL)

    page = superuser_client.get(reverse("admin:billing_jobrun_change", args=[run.pk]))

    assert page.status_code == 200
    assert b"first_account_id" in page.content or b"First account id" in page.content


@pytest.mark.parametrize(
    "path",
    [
        "/admin/accounts/account/%00/change/",
        "/admin/accounts/account/acct_%00/grant/",
        "/admin/accounts/account/%00/suspend/",
        "/admin/billing/purchase/pur_%00/change/",
        "/admin/billing/grant/grt_%00/change/",
    ],
)
def test_an_object_id_with_a_nul_finds_nothing_and_is_not_a_500(superuser_client, path):
    superuser_client.raise_request_exception = False
    response = superuser_client.get(path)
    assert response.status_code in (302, 404), response.status_code
