"""Input validation and output shapes of the billing API."""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from rest_framework import serializers

from accounts.ids import row_id_of, row_public_id
from accounts.serializers import StrictCharField, StrictSerializer
from billing.history import shown_reference
from billing.models import ActorType, Debit, Grant, Hold, LedgerEntry
from billing.services.ledger import MAX_CREDITS_PER_REQUEST

MAX_METADATA_BYTES = 4096


def credits_field(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=1, max_value=MAX_CREDITS_PER_REQUEST, **kwargs)


class StrictIntegerField(serializers.IntegerField):
    """An integer in JSON: refuses strings, floats and booleans that DRF would coerce."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugField(serializers.SlugField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class SpendRequest(StrictSerializer):
    operation = StrictSlugField(max_length=50, required=False)
    credits = StrictIntegerField(min_value=1, max_value=MAX_CREDITS_PER_REQUEST, required=False)
    reference = StrictCharField(max_length=255)
    # A spend names its price one way: the schema says so too (billing.schema.StrictRequestScheme).
    exactly_one_of = ("operation", "credits")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if sum(name in attrs for name in self.exactly_one_of) != 1:
            raise serializers.ValidationError("Name exactly one of 'operation' or 'credits'.")
        return attrs


class DebitRequest(SpendRequest):
    metadata = serializers.DictField(required=False)

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        try:
            # Strict: no NaN or Infinity, no lone surrogates, no NUL (PostgreSQL's jsonb refuses them).
            encoded = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        except (ValueError, UnicodeEncodeError):
            raise serializers.ValidationError("metadata must be plain JSON text and finite numbers.") from None
        if _has_nul(value):
            raise serializers.ValidationError("metadata must not contain NUL characters.")
        if len(encoded) > MAX_METADATA_BYTES:
            raise serializers.ValidationError(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON.")
        return value


MAX_BATCH_DEBITS = 1000


class DebitBatchItem(DebitRequest):
    """One debit of POST /debits/batch: the single route's body plus its account and key."""

    account_id = StrictCharField(max_length=64)
    # Taken as sent (not trimmed): the batch refuses a key named twice by comparing the keys as
    # sent, so "k" and " k" must not both become "k".
    idempotency_key = StrictCharField(max_length=255, trim_whitespace=False)

    def validate_idempotency_key(self, value: str) -> str:
        if not value.strip() or value != value.strip() or not value.isprintable() or not value.isascii():
            raise serializers.ValidationError("Must be 1 to 255 printable ASCII characters, no spaces at either end.")
        return value


_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_BATCH_REQUIRED = frozenset({"account_id", "idempotency_key", "reference"})
_SINGLE_REQUIRED = frozenset({"reference"})


def _plain_text(value: Any, longest: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= longest and value.isprintable() and value == value.strip()


def _spend_fast(raw: Any, required: frozenset[str]) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    keys = raw.keys()
    spend = keys - required
    if not (required <= keys) or spend not in ({"credits"}, {"operation"}):
        return None
    if not _plain_text(raw["reference"], 255):
        return None
    data = {key: raw[key] for key in required}
    if "credits" in raw:
        credits = raw["credits"]
        if type(credits) is not int or not 1 <= credits <= MAX_CREDITS_PER_REQUEST:
            return None
        data["credits"] = credits
    else:
        operation = raw["operation"]
        if not isinstance(operation, str) or len(operation) > 50 or not _SLUG.fullmatch(operation):
            return None
        data["operation"] = operation
    return data


def debit_request_fast(raw: Any) -> dict[str, Any] | None:
    """DebitRequest's validated data for a plain, valid body without a serializer; None when the
    body is anything else (metadata included), for DebitRequest to judge and word the errors.

    It accepts a subset of what DebitRequest accepts, with the same result: the tests check
    that on every input they try.
    """
    return _spend_fast(raw, _SINGLE_REQUIRED)


def hold_request_fast(raw: Any) -> dict[str, Any] | None:
    """HoldRequest's validated data for a plain, valid body without a serializer, or None (as
    debit_request_fast: a subset of what HoldRequest accepts, with the same result)."""
    if not isinstance(raw, dict):
        return None
    expires_in = raw.get("expires_in", settings.HOLD_DEFAULT_EXPIRES_IN_SECONDS)
    if type(expires_in) is not int or not 1 <= expires_in <= settings.HOLD_MAX_EXPIRES_IN_SECONDS:
        return None
    data = _spend_fast({key: value for key, value in raw.items() if key != "expires_in"}, _SINGLE_REQUIRED)
    if data is not None:
        data["expires_in"] = expires_in
    return data


def capture_request_fast(raw: Any) -> dict[str, Any] | None:
    """CaptureRequest's validated data for `{}` or `{"credits": n}`, or None (as debit_request_fast)."""
    if raw == {}:
        return {}
    if not isinstance(raw, dict) or raw.keys() != {"credits"}:
        return None
    credits = raw["credits"]
    if type(credits) is not int or not 0 <= credits <= MAX_CREDITS_PER_REQUEST:
        return None
    return {"credits": credits}


def batch_item_fast(raw: Any) -> dict[str, Any] | None:
    """DebitBatchItem's validated data for a plain, valid item, or None (as debit_request_fast).

    A batch carries up to 1,000 items and a serializer per item costs more than the debit.
    """
    data = _spend_fast(raw, _BATCH_REQUIRED)
    if data is None:
        return None
    if not (
        _plain_text(data["account_id"], 64)
        and _plain_text(data["idempotency_key"], 255)
        and data["idempotency_key"].isascii()
    ):
        return None
    return data


class DebitBatchRequest(StrictSerializer):
    debits = serializers.ListField(child=serializers.DictField(), min_length=1, max_length=MAX_BATCH_DEBITS)


class DebitBatchResultOut(serializers.Serializer):
    idempotency_key = serializers.CharField()
    status = serializers.IntegerField(help_text="The status the single debit route would answer.")
    replayed = serializers.BooleanField(help_text="True when the key had been used: the stored answer.")
    body = serializers.DictField(help_text="The single route's body: a debit, or {error: {...}}.")


class DebitBatchOut(serializers.Serializer):
    results = DebitBatchResultOut(many=True)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class HoldRequest(SpendRequest):
    expires_in = StrictIntegerField(
        min_value=1, max_value=settings.HOLD_MAX_EXPIRES_IN_SECONDS, default=settings.HOLD_DEFAULT_EXPIRES_IN_SECONDS
    )


class CaptureRequest(StrictSerializer):
    credits = StrictIntegerField(min_value=0, max_value=MAX_CREDITS_PER_REQUEST, required=False)


class EmptyRequest(StrictSerializer):
    pass


class LedgerQuery(StrictSerializer):
    cursor = serializers.CharField(required=False, max_length=64)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)

    def validate_cursor(self, value: str) -> int:
        entry_id = decode_cursor(value)
        if entry_id is None:
            raise serializers.ValidationError("Invalid cursor: pass next_cursor from the previous page.")
        return entry_id


# A page's next_cursor: the last entry's row id, permuted as public ids are (accounts/ids.py),
# so callers can neither read it nor make one up that names another place.
CURSOR_PREFIX = "cur_"
# What decode_cursor reads: the prefix and 16 hex digits of a row id below 2**62 (accounts/ids.py).
CURSOR_PATTERN = f"^{CURSOR_PREFIX}[0-3][0-9a-f]{{15}}$"


def encode_cursor(entry_id: int) -> str:
    return row_public_id(CURSOR_PREFIX, entry_id)


def decode_cursor(value: str) -> int | None:
    return row_id_of(CURSOR_PREFIX, value)


# --- Output shapes ---------------------------------------------------------------------------


class GrantOut(serializers.Serializer):
    id = serializers.SerializerMethodField(help_text="The lot's public id (grt_...).")
    source = serializers.CharField()  # type: ignore[assignment]  # the output key; DRF pops declared fields
    remaining = serializers.IntegerField()
    expires_at = serializers.DateTimeField(allow_null=True)

    def get_id(self, grant: Grant) -> str:
        return row_public_id("grt_", grant.pk)


class BalanceOut(serializers.Serializer):
    account = serializers.CharField(source="account.public_id")
    status = serializers.CharField(source="account.status")
    available = serializers.IntegerField()
    held = serializers.IntegerField()
    free = serializers.IntegerField()
    paid = serializers.IntegerField()
    grants = GrantOut(many=True)


class CachedBalanceOut(serializers.Serializer):
    available = serializers.IntegerField(source="available_credits")
    held = serializers.IntegerField(source="held_credits")


class DebitOut(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    account = serializers.CharField(source="account.public_id")
    status = serializers.CharField()
    balance = CachedBalanceOut(source="account")

    class Meta:
        model = Debit
        fields = [
            "id",
            "account",
            "credits",
            "operation",
            "reference",
            "metadata",
            "status",
            "created_at",
            "refunded_at",
            "balance",
        ]


HOLD_FIELDS = (
    "id",
    "account",
    "credits",
    "captured_credits",
    "status",
    "operation",
    "reference",
    "created_at",
    "expires_at",
    "settled_at",
)


class HoldOut(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    account = serializers.CharField(source="account.public_id")

    class Meta:
        model = Hold
        fields = list(HOLD_FIELDS)


def actor_public_id(actor_type: str, actor_id: str) -> str:
    """Who made an entry, by public id: a service key (key_...), a user or staff user (usr_...),
    or a system task's name. Entries store the row id of the key or user."""
    if actor_type in ACTOR_PREFIXES and actor_id.isdigit():
        return row_public_id(ACTOR_PREFIXES[actor_type], int(actor_id))
    return actor_id


ACTOR_PREFIXES: dict[str, str] = {ActorType.SERVICE: "key_", ActorType.USER: "usr_", ActorType.STAFF: "usr_"}


class ActorOut(serializers.Serializer):
    type = serializers.ChoiceField(choices=ActorType.choices, source="actor_type")
    id = serializers.SerializerMethodField(
        help_text="A service key's id (key_...), a user's (usr_...), or the name of a system task."
    )

    def get_id(self, entry: LedgerEntry) -> str:
        return actor_public_id(entry.actor_type, entry.actor_id)


class LedgerEntryOut(serializers.ModelSerializer):
    id = serializers.SerializerMethodField(help_text="The entry's public id (le_...).")
    grant = serializers.SerializerMethodField(help_text="The lot it changed (grt_...), if any.")
    hold = serializers.CharField(source="hold.public_id", allow_null=True, default=None)
    debit = serializers.CharField(source="debit.public_id", allow_null=True, default=None)
    actor = ActorOut(source="*")
    reference = serializers.SerializerMethodField(
        help_text="The spend's reference, or the refunded purchase's id; empty on what support did."
    )

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "kind",
            "credits",
            "held_credits",
            "balance_after",
            "held_after",
            "grant",
            "hold",
            "debit",
            "actor",
            "reference",
            "created_at",
        ]

    def get_id(self, entry: LedgerEntry) -> str:
        return row_public_id("le_", entry.pk)

    def get_grant(self, entry: LedgerEntry) -> str | None:
        return None if entry.grant_id is None else row_public_id("grt_", entry.grant_id)

    def get_reference(self, entry: LedgerEntry) -> str:
        return shown_reference(entry)


class LedgerPageOut(serializers.Serializer):
    data = LedgerEntryOut(many=True)  # type: ignore[assignment]  # the output key; DRF pops declared fields
    next_cursor = serializers.CharField(allow_null=True)
