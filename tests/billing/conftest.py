"""Fixtures for the pack, purchase and Stripe tests."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing.services import stripe_gateway
from tests.billing.stripe_support import RecordingHTTPClient

HERE = Path(__file__).resolve().parent


@pytest.fixture
def recorder(stripe_keys, monkeypatch) -> RecordingHTTPClient:
    client = RecordingHTTPClient()
    monkeypatch.setattr(stripe_gateway, "HTTP_CLIENT", client)
    return client


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory) -> Iterator[str]:
    """localstripe as its own process on a free loopback port, for the whole session."""
    log = (tmp_path_factory.mktemp("localstripe") / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "localstripe_server.py")], stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip() or 0)
        assert port, f"localstripe did not start; see {log.name}"
        url = f"http://127.0.0.1:{port}"
        try:
            urllib.request.urlopen(f"{url}/v1/customers", timeout=10)
        except urllib.error.HTTPError as answer:  # 401 without a key: it is answering
            assert answer.code == 401, answer
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def localstripe(localstripe_url, stripe_keys) -> str:
    stripe_keys.STRIPE_API_BASE = localstripe_url
    return localstripe_url
