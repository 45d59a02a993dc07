"""Public identifiers: a short type prefix and a random, URL-safe body."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
# Random bytes below this map evenly onto the 62 characters (4 x 62 = 248); the rest are drawn again.
_EVEN_BELOW = 256 - 256 % len(_ALPHABET)


def random_id(prefix: str, length: int = 20) -> str:
    """prefix + `length` characters drawn uniformly from [A-Za-z0-9] by the OS's CSPRNG.

    One read of random bytes per id (not one per character): ids are made on the spend path,
    up to a thousand per batch.
    """
    chars: list[str] = []
    while len(chars) < length:
        chars += [_ALPHABET[b % len(_ALPHABET)] for b in secrets.token_bytes(length + 4) if b < _EVEN_BELOW]
    return prefix + "".join(chars[:length])


def new_account_id() -> str:
    return random_id("acct_")
