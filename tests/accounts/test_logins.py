"""Logins under abuse: failed logins are counted per account and per client address (django-axes)
on the API's token route, the web login and the admin's; the client address comes from
X-Forwarded-For only behind TRUSTED_PROXY_COUNT proxies; personal tokens expire and can be
revoked."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import User, UserToken
from accounts.services import service_key_create, user_token_create
from tests.accounts.factories import UserFactory
from tests.conftest import Api

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


@pytest.fixture
def three_tries(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return settings


def api_login(email: str, password: str, address: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    api = Api()
    body = {"email": email, "password": password}
    return api.client.post("/api/v1/auth/token", body, content_type="application/json", REMOTE_ADDR=address)


# --- Client addresses ------------------------------------------------------------------------


def anon_login(forwarded_for: str, address: str = "10.0.0.1"):  # type: ignore[no-untyped-def]
    body = {"email": "nobody@example.com", "password": "wrong-password"}
    return Client().post(
        "/api/v1/auth/token",
        body,
        content_type="application/json",
        REMOTE_ADDR=address,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


def test_rotating_x_forwarded_for_does_not_lift_the_anonymous_limit(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": 3}
    settings.AXES_FAILURE_LIMIT = 100

    statuses = [anon_login(f"203.0.113.{n}").status_code for n in range(5)]

    assert statuses == [401, 401, 401, 429, 429]


def test_behind_one_trusted_proxy_the_address_it_appended_is_the_client(settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "anon": 2}
    settings.AXES_FAILURE_LIMIT = 100
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    # The client writes what it likes on the left; the proxy appends the address it saw.
    spoofed = [anon_login(f"198.51.100.{n}, 203.0.113.7", address="10.0.0.2").status_code for n in range(3)]
    another_client = anon_login("203.0.113.8", address="10.0.0.2").status_code

    assert spoofed == [401, 401, 429]  # (the anonymous limit: failed logins are allowed 100 here)
    assert another_client == 401


# --- Lockouts --------------------------------------------------------------------------------


def test_the_token_route_locks_an_account_out_after_the_failure_limit_even_with_the_right_password(three_tries):
    user = UserFactory()
    wrong = [api_login(user.email, "wrong-password").status_code for _ in range(2)]

    locked = api_login(user.email, "wrong-password")  # the third failure locks the account
    still = api_login(user.email, PASSWORD)
    elsewhere = api_login(user.email.upper(), PASSWORD, address="10.9.9.9")  # per account, any address

    assert wrong == [401, 401]
    for response in (locked, still, elsewhere):
        assert response.status_code == 429, response.content
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response["Retry-After"]) == 15 * 60
    assert not UserToken.objects.exists()


def test_an_address_that_tries_many_accounts_is_locked_out(three_tries):
    victims = [UserFactory() for _ in range(3)]
    answers = [api_login(victim.email, "wrong-password", address="10.6.6.6").status_code for victim in victims]
    fresh = UserFactory()

    assert answers == [401, 401, 429]

    assert api_login(fresh.email, PASSWORD, address="10.6.6.6").status_code == 429  # per address
    assert api_login(fresh.email, PASSWORD, address="10.7.7.7").status_code == 200


@pytest.mark.parametrize("between", ["own login", "web login", "signup"])
def test_an_address_cannot_clear_its_count_by_logging_into_an_account_of_its_own(three_tries, between):
    three_tries.EMAIL_VERIFICATION_REQUIRED = False
    mine = UserFactory()
    victims = [UserFactory() for _ in range(3)]
    address = "10.5.5.5"
    site = Client(REMOTE_ADDR=address)
    answers = []
    for n, victim in enumerate(victims):
        answers.append(api_login(victim.email, "wrong-password", address=address).status_code)
        if between == "own login":
            assert api_login(mine.email, PASSWORD, address=address).status_code in (200, 429)
        elif between == "web login":
            site.post("/login", {"username": mine.email, "password": PASSWORD})
        else:
            site.post(
                "/signup", {"email": f"throwaway{n}@example.com", "password": PASSWORD, "password_again": PASSWORD}
            )
    assert answers == [401, 401, 429]  # the address's third failure locks it, whatever came between


def test_a_successful_login_clears_the_failures_and_the_lockout_ends_after_the_cool_off(three_tries):
    user = UserFactory()
    assert [api_login(user.email, "wrong-password").status_code for _ in range(2)] == [401, 401]
    assert api_login(user.email, PASSWORD).status_code == 200
    assert [api_login(user.email, "wrong-password").status_code for _ in range(2)] == [401, 401]  # counted anew
    assert api_login(user.email, PASSWORD).status_code == 200
    assert [api_login(user.email, "wrong-password").status_code for _ in range(3)] == [401, 401, 429]
    assert api_login(user.email, PASSWORD).status_code == 429

    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert api_login(user.email, PASSWORD).status_code == 200


def test_the_web_login_is_locked_out_with_a_page(three_tries):
    user = UserFactory()
    site = Client()
    for _ in range(2):
        assert site.post(reverse("web-login"), {"username": user.email, "password": "nope-nope"}).status_code == 200
    assert site.post(reverse("web-login"), {"username": user.email, "password": "nope-nope"}).status_code == 429

    locked = site.post(reverse("web-login"), {"username": user.email, "password": PASSWORD})

    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content and locked["Content-Type"].startswith("text/html")
    assert "_auth_user_id" not in site.session


def test_the_admin_login_is_locked_out_too(three_tries):
    User.objects.create_superuser(email="ops@example.com", password=PASSWORD)
    site = Client()
    login = reverse("admin:login")
    for _ in range(2):
        assert site.post(login, {"username": "ops@example.com", "password": "nope-nope"}).status_code == 200
    assert site.post(login, {"username": "ops@example.com", "password": "nope-nope"}).status_code == 429

    locked = site.post(login, {"username": "OPS@example.com", "password": PASSWORD})

    assert locked.status_code == 429
    assert site.get(reverse("admin:index")).status_code == 302  # still logged out


# --- Personal tokens -------------------------------------------------------------------------


def test_a_token_revoked_through_the_api_is_refused_from_then_on(user_api):
    api, _ = user_api
    assert api.get("/me").status_code == 200

    revoked = api.client.delete("/api/v1/auth/token", headers={"Authorization": f"Bearer {api.key}"})

    assert revoked.status_code == 204
    assert api.get("/me").status_code == 401
    assert UserToken.objects.get().revoked_at is not None


def test_revoking_needs_a_personal_token(api):
    anonymous = Client().delete("/api/v1/auth/token")
    service = api.client.delete("/api/v1/auth/token", headers={"Authorization": f"Bearer {api.key}"})

    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "authentication_failed"
    assert service.status_code == 403 and service.json()["error"]["code"] == "permission_denied"


def test_a_token_expires_after_its_lifetime(settings):
    settings.USER_TOKEN_LIFETIME_DAYS = 30
    made = timezone.now()
    with time_machine.travel(made, tick=False):
        _, raw = user_token_create(user=UserFactory())
    api = Api(raw)

    with time_machine.travel(made + timedelta(days=29, hours=23), tick=False):
        assert api.get("/me").status_code == 200
    with time_machine.travel(made + timedelta(days=30), tick=False):
        assert api.get("/me").status_code == 401


def test_a_service_key_is_not_a_personal_token_to_revoke(db):
    _, raw = service_key_create(name="gen")
    assert Client().delete("/api/v1/auth/token", headers={"Authorization": f"Bearer {raw}"}).status_code == 403
