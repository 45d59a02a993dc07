"""Public identifiers: a short type prefix and a random, URL-safe body."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 20) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_account_id() -> str:
    return random_id("acct_")
