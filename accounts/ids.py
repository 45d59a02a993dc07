"""Public identifiers: a short type prefix and a random, URL-safe body."""

from __future__ import annotations

import functools
import hashlib
import secrets
import string

from django.conf import settings

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


# --- Public ids of rows that store none: grants, ledger entries, users, service keys -----------
# These tables are large (a grant per account and month, an entry per movement) or written on the
# spend path, and the ledger is append-only, so a stored random id would cost a rewrite of every
# existing row and an index entry per insert. Their public id is instead the row id put through a
# keyed permutation (a four-round Feistel network on two 31-bit halves, keyed by PUBLIC_ID_KEY),
# written as 16 hex digits after the type's prefix: callers never see the row id, nor how
# many rows were made between two ids. It hides; it is not a cipher to bet secrets on. Its SQL
# twin is billing/sql/billing_public_id.sql (tests/accounts/test_row_ids.py holds them equal).
# Changing PUBLIC_ID_KEY changes every such id, so it is set once per deployment.

_HALF_BITS = 31
_HALF_MASK = (1 << _HALF_BITS) - 1
ROW_ID_LIMIT = 1 << (2 * _HALF_BITS)  # bigint ids below 2**62: 4.6e18 rows
_ROUND_MULTIPLIER = 0x2545F491  # odd, below 2**30: a product with a half stays below 2**61
_BODY_LENGTH = 16  # hex digits of 64 bits: PostgreSQL writes them with one to_hex() call
_HEX = frozenset("0123456789abcdef")


@functools.cache
def _round_keys(secret: str, prefix: str) -> tuple[int, ...]:
    digest = hashlib.sha256(f"public-row-id:{prefix}:{secret}".encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "big") & _HALF_MASK for i in range(0, 16, 4))


def row_id_keys(prefix: str) -> tuple[int, ...]:
    """The four round keys of the permutation for ids with this prefix, from
    settings.PUBLIC_ID_KEY: each type has its own, so a grant and a user with the same row id do
    not share an id's body (billing passes them to billing_public_id in SQL)."""
    return _round_keys(settings.PUBLIC_ID_KEY, prefix)


def _mix(half: int, key: int) -> int:
    return (((half ^ key) * _ROUND_MULTIPLIER) & _HALF_MASK) ^ (half >> 11)


def _permute(value: int, keys: tuple[int, ...]) -> int:
    left, right = value >> _HALF_BITS, value & _HALF_MASK
    for key in keys:
        left, right = right, left ^ _mix(right, key)
    return (left << _HALF_BITS) | right


def _unpermute(value: int, keys: tuple[int, ...]) -> int:
    left, right = value >> _HALF_BITS, value & _HALF_MASK
    for key in reversed(keys):
        left, right = right ^ _mix(left, key), left
    return (left << _HALF_BITS) | right


def row_public_id(prefix: str, row_id: int) -> str:
    """`prefix` + the row id permuted and written in hex (grt_, le_, usr_, key_)."""
    if not 0 <= row_id < ROW_ID_LIMIT:
        raise ValueError(f"row id out of range: {row_id}")
    return f"{prefix}{_permute(row_id, row_id_keys(prefix)):0{_BODY_LENGTH}x}"


def row_id_of(prefix: str, public_id: str) -> int | None:
    """The row id `row_public_id(prefix, id)` names, or None for anything that is not such an id."""
    body = public_id.removeprefix(prefix) if public_id.startswith(prefix) else ""
    if len(body) != _BODY_LENGTH or not _HEX.issuperset(body):
        return None
    value = int(body, 16)
    if value >= ROW_ID_LIMIT:
        return None
    return _unpermute(value, row_id_keys(prefix))


def user_public_id(user_id: int) -> str:
    return row_public_id("usr_", user_id)


def service_key_public_id(key_id: int) -> str:
    return row_public_id("key_", key_id)
