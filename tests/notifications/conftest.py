"""Fixtures of the notification tests: a webhook receiver on loopback is allowed."""

from __future__ import annotations

import pytest

# localstripe as its own process, and the recording Stripe client: billing's fixtures.
from tests.billing.conftest import localstripe, localstripe_url, recorder  # noqa: F401


@pytest.fixture
def loopback_webhooks(settings):
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES = True
    return settings


@pytest.fixture
def buyer(db):
    """An end user with a personal token and an account with no credits (none to come)."""
    from accounts.services import user_token_create
    from tests.billing.factories import make_account
    from tests.conftest import Api

    account = make_account()
    _, raw = user_token_create(user=account.user)
    return Api(raw), account
