"""EMAIL_VERIFICATION_REQUIRED: signup emails a signed link and withholds the first free credits;
opening the link (and confirming) verifies the email and grants them, once. Nothing else (a
settle, the refill, a month passing) grants them before."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
import time_machine
from django.core import mail
from django.test import Client

from accounts.ids import user_public_id
from accounts.models import Account, User
from accounts.services import account_reactivate, account_suspend
from accounts.verification import email_verification_token
from billing.models import Grant, JobRun
from billing.services.jobs import job_run_inline
from billing.services.ledger import Actor, account_settle
from billing.signup import FREE_CREDITS_WITHHELD, email_verify, user_signup
from tests.concurrency import run_concurrently

PASSWORD = "correct-horse-battery"
SIGNUP_AT = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


@pytest.fixture
def required(settings, eager_tasks):
    settings.EMAIL_VERIFICATION_REQUIRED = True
    return settings


def link_in(message) -> str:  # type: ignore[no-untyped-def]
    (link,) = re.findall(r"http://\S+", message.body)
    return link


def free_credits(user: User) -> int:
    return sum(Grant.objects.filter(account__user=user, source="free_monthly").values_list("amount", flat=True))


def test_the_setting_defaults_to_required():
    from config.settings import base

    assert base.EMAIL_VERIFICATION_REQUIRED is True
    assert base.WAITLIST_ENABLED is False and base.WAITLIST_WEEKLY_QUOTA == 1000


@pytest.mark.django_db
def test_signup_withholds_the_free_credits_and_emails_a_link(required, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = Client().post(
            "/api/v1/auth/signup",
            json.dumps({"email": "ada@example.com", "password": PASSWORD}),
            content_type="application/json",
        )
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["email_verified_at"] is None and body["balance"]["available"] == 0
    (message,) = mail.outbox
    assert message.to == ["ada@example.com"]
    assert link_in(message).startswith("http://127.0.0.1:8000/verify-email?token=")


@pytest.mark.django_db
def test_nothing_grants_withheld_credits_before_verification(required, assert_ledger_clean):
    user = user_signup(email="ada@example.com", password=PASSWORD, now=SIGNUP_AT)
    account = Account.objects.get(user=user)
    assert account.free_period_start == FREE_CREDITS_WITHHELD
    later = SIGNUP_AT + timedelta(days=65)  # two periods later
    account_settle(account=account, actor=Actor.system("test"), now=later)
    assert job_run_inline(job=JobRun.Job.REFILL, now=later).rows == 0
    assert free_credits(user) == 0
    assert Account.objects.get(pk=account.pk).available_credits == 0
    assert_ledger_clean()


@pytest.mark.django_db
def test_verifying_grants_the_first_periods_credits_once(required, assert_ledger_clean):
    user = user_signup(email="ada@example.com", password=PASSWORD, now=SIGNUP_AT)
    verified_at = SIGNUP_AT + timedelta(days=40)
    with time_machine.travel(verified_at, tick=False):
        token = email_verification_token(user)
        assert email_verify(token=token, now=verified_at)[1] is True
        assert email_verify(token=token, now=verified_at)[1] is False
    account = Account.objects.get(user=user)
    # The periods start on the day of verification: its first period is the 50-credit one.
    assert account.period_anchor_day == 19
    assert account.first_period_start == datetime(2026, 4, 19, tzinfo=UTC)
    assert free_credits(user) == 50 and account.available_credits == 50
    # The next period brings the later amount, as for any account.
    account_settle(account=account, actor=Actor.system("test"), now=datetime(2026, 5, 19, 0, 1, tzinfo=UTC))
    assert free_credits(user) == 65
    assert_ledger_clean()


@pytest.mark.django_db(transaction=True)
def test_two_verifications_racing_grant_once(required):
    user = user_signup(email="ada@example.com", password=PASSWORD)
    token = email_verification_token(user)
    outcomes = run_concurrently(2, lambda i: email_verify(token=token)[1])
    assert sorted(outcomes) == [False, True]
    assert free_credits(user) == 50


@pytest.mark.django_db
def test_without_the_requirement_signup_grants_at_once(settings):
    settings.EMAIL_VERIFICATION_REQUIRED = False
    user = user_signup(email="ada@example.com", password=PASSWORD)
    assert free_credits(user) == 50 and not mail.outbox


@pytest.mark.django_db
class TestPages:
    def signup(self, client: Client) -> User:
        form = {"email": "ada@example.com", "password": PASSWORD, "password_again": PASSWORD}
        response = client.post("/signup", form)
        assert response.status_code == 302 and response["Location"] == "/verify-email"
        return User.objects.get(email="ada@example.com")

    def test_the_emailed_link_asks_to_confirm_then_verifies(self, required, django_capture_on_commit_callbacks):
        client = Client()
        with django_capture_on_commit_callbacks(execute=True):
            user = self.signup(client)
        assert "Check your inbox" in client.get("/verify-email").content.decode()
        link = link_in(mail.outbox[0])
        token = unquote(link.split("token=", 1)[1])
        page = Client().get(link.removeprefix("http://127.0.0.1:8000"))
        assert page.status_code == 200 and "Verify my email" in page.content.decode()
        assert f'value="{token}"' in page.content.decode()
        assert free_credits(user) == 0  # opening the link alone verifies nothing
        done = Client().post("/verify-email", {"token": token})
        assert done.status_code == 200 and "your free credits are on your account" in done.content.decode()
        assert free_credits(user) == 50
        again = Client().post("/verify-email", {"token": token})
        assert "was verified already" in again.content.decode() and free_credits(user) == 50

    def test_a_suspended_account_is_not_told_its_free_credits_arrived(self, required):
        user = user_signup(email="ada@example.com", password=PASSWORD)
        account_suspend(account_id=user.account.pk, reason="content policy")

        done = Client().post("/verify-email", {"token": email_verification_token(user)})

        page = done.content.decode()
        assert done.status_code == 200 and "is verified" in page and free_credits(user) == 0
        assert "your free credits are on your account" not in page
        assert "Your account is suspended: your free credits arrive once it is restored." in page
        account_reactivate(account_id=user.account.pk, reason="appeal")
        account_settle(account=Account.objects.get(user=user), actor=Actor.system("test"))
        assert free_credits(user) == 50  # as the page said

    @pytest.mark.parametrize("tamper", ["forged", "swap", "expired"])
    def test_a_bad_link_is_a_400_page(self, required, tamper):
        user = user_signup(email="ada@example.com", password=PASSWORD, now=SIGNUP_AT)
        with time_machine.travel(SIGNUP_AT, tick=False):
            token = email_verification_token(user)
        if tamper == "forged":
            token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        elif tamper == "swap":
            User.objects.filter(pk=user.pk).update(email="other@example.com")
        when = SIGNUP_AT + timedelta(hours=73 if tamper == "expired" else 1)
        with time_machine.travel(when, tick=False):
            response = Client().post("/verify-email", {"token": token})
        assert response.status_code == 400
        expected = "has expired" if tamper == "expired" else "is not valid"
        assert expected in response.content.decode()
        assert free_credits(user) == 0

    def test_the_link_can_be_sent_again_a_few_times(self, required, django_capture_on_commit_callbacks):
        client = Client()
        with django_capture_on_commit_callbacks(execute=True):
            self.signup(client)
        statuses = [client.post("/verify-email/send").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert len(mail.outbox) == 4  # signup's and three more


@pytest.mark.django_db
def test_the_billing_page_says_the_free_credits_wait_for_the_email_until_it_is_verified(
    required, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        user = user_signup(email="grace@example.com", password=PASSWORD)
    browser = Client()
    browser.force_login(user)
    page = browser.get("/billing").content.decode()
    assert 'data-testid="verify-email-notice"' in page and "grace@example.com" in page
    (message,) = mail.outbox
    email_verify(token=unquote(link_in(message).split("token=", 1)[1]))
    page = browser.get("/billing").content.decode()
    assert 'data-testid="verify-email-notice"' not in page
    assert '<span data-testid="available">50</span>' in page


@pytest.mark.django_db
def test_a_verification_link_names_the_user_by_public_id_not_row_id(required):
    user = user_signup(email="ada@example.com", password=PASSWORD, now=SIGNUP_AT)
    payload = email_verification_token(user).split(":")[0]
    named = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert named == {"user": user_public_id(user.pk), "email": "ada@example.com"}
