"""Operators with each role, and the two-step confirmation the console's actions ask for."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.test import Client

from accounts.models import User
from console.roles import FINANCE, SUPPORT, roles_sync
from tests.billing.conftest import recorder

__all__ = ["recorder"]  # Stripe's HTTP boundary, recorded (the refund tests)


def operator(email: str, *, role: str | None = None, superuser: bool = False) -> User:
    roles_sync(apps)  # transactional tests empty the groups the migration made
    if superuser:
        return User.objects.create_superuser(email=email, password="x" * 12)
    user = User.objects.create_user(email=email, password="x" * 12, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root_client(db) -> Client:
    return logged_in(operator("root@example.com", superuser=True))


@pytest.fixture
def support_client(db) -> Client:
    return logged_in(operator("support@example.com", role=SUPPORT))


@pytest.fixture
def finance_client(db) -> Client:
    return logged_in(operator("finance@example.com", role=FINANCE))


def review(client: Client, url: str, data: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The first POST: the confirmation page (or the form again, with its errors)."""
    return client.post(url, data)


def confirm(client: Client, url: str, data: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Both steps, as an operator clicks them: review, then confirm with the signed confirmation."""
    page = review(client, url, data)
    assert page.status_code == 200, page.status_code
    assert page.context["stage"] == "confirm", page.context["form"].errors
    return client.post(url, {**data, "confirmation": page.context["confirmation"]})
