"""How billing's routes are described in the OpenAPI document: billing's error codes beside the
general ones (accounts/schema.py), each kind of route's error responses (every status it can
answer, with its codes as an enum and their details), the headers of the POSTs that move
credits, and the rules the server holds request bodies and parameters to (unknown fields, the
Idempotency-Key, a ledger page's limit and cursor, free text). tests/test_openapi.py checks that
every code the code can raise is listed, and that each rule stated here is the one enforced.
"""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from accounts.schema import GENERAL_ERRORS, SIGNED_IN, WITH_BODY, ErrorCatalog, error_responses
from billing.idempotency import MAX_KEY_LENGTH
from billing.serializers import CURSOR_PATTERN, LedgerQuery

_INTEGER = {"type": "integer"}
_TEXT = {"type": "string"}

_MESSAGES = {"type": "array", "items": _TEXT}
# A field's messages; for a list or an object (a batch's `debits`, `emails`, `event_types`), its
# items' messages by index or key, as DRF words them.
_FIELD_ERRORS = {
    "type": "object",
    "additionalProperties": {"anyOf": [_MESSAGES, {"type": "object", "additionalProperties": _MESSAGES}]},
    "description": "Field name: its messages, or for a list or an object its items' messages by index or key.",
}

BILLING_ERRORS: ErrorCatalog = {
    "validation_error": (
        400,
        GENERAL_ERRORS["validation_error"][1],
        {
            **GENERAL_ERRORS["validation_error"][2],
            "fields": _FIELD_ERRORS,
            "held": {**_INTEGER, "description": "A capture of more than is held: the credits the hold has."},
        },
    ),
    "insufficient_credits": (
        402,
        "The account has fewer available credits than the spend asks for; nothing moved.",
        {
            "available": {**_INTEGER, "description": "Credits the account could spend."},
            "requested": {**_INTEGER, "description": "Credits the request asked for."},
        },
    ),
    "account_suspended": (403, "The account is suspended; nothing moved.", {}),
    "hold_not_pending": (
        409,
        "The hold was already captured or released.",
        {"status": {**_TEXT, "description": "The hold's status."}},
    ),
    "hold_expired": (
        409,
        "The hold lapsed before this call; its credits went back.",
        {"hold": {**_TEXT, "description": "The hold's id (hold_...)."}},
    ),
    "debit_already_refunded": (409, "The debit was refunded before.", {}),
    "daily_cap_reached": (
        429,
        "The account's spending cap for this UTC day would be passed: retry after `retry_after` seconds (the "
        "next UTC day; also the Retry-After header). Nothing moved, and nothing is recorded under the key. A "
        "spend larger than the whole cap never fits: `retry_after` is null and there is no Retry-After.",
        {"retry_after": {**_INTEGER, "nullable": True, "description": "Seconds to wait; null: never."}},
    ),
    "invitation_required": (
        403,
        "The waitlist is on and the signup has no usable invitation.",
        {"reason": {"type": "string", "enum": ["missing", "invalid", "used", "expired"]}},
    ),
    "uri_too_long": (
        414,
        "The path with its query is longer than the server reads (gunicorn's limit_request_line, 4094 bytes).",
        {},
    ),
    "payment_provider_error": (502, "Stripe refused or did not answer; nothing was charged.", {}),
    "payments_unavailable": (503, "Payments are not configured on this server.", {}),
}
ERROR_CODES: ErrorCatalog = {**GENERAL_ERRORS, **BILLING_ERRORS}
CREDIT_MOVING = (*WITH_BODY, "idempotency_key_required", "idempotency_key_reused")


def errors(*codes: str) -> dict[int, OpenApiResponse]:
    return error_responses(ERROR_CODES, *codes)


# billing.idempotency.valid_key as a pattern: printable ASCII, not only spaces (tests/test_openapi.py
# holds the two to the same answer).
IDEMPOTENCY_KEY_PATTERN = r"^[ -~]*[!-~][ -~]*$"

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": IDEMPOTENCY_KEY_PATTERN},
    OpenApiParameter.HEADER,
    required=True,
    description=f"1-{MAX_KEY_LENGTH} printable ASCII characters, unique per operation. A retry with the same key "
    "and the same request answers the first answer again and moves nothing; kept at least 24 hours.",
)


def credit_moving_parameters(success: int) -> list[OpenApiParameter]:
    """The Idempotency-Key of a POST that moves credits, and the header on the answers it
    records under the key (its success and its refusals: 402, 403, 409)."""
    return [
        IDEMPOTENCY_HEADER,
        OpenApiParameter(
            "Idempotent-Replayed",
            str,
            OpenApiParameter.HEADER,
            response=[success, 402, 403, 409],
            enum=["true"],
            description="`true` when this is the answer stored for an earlier request with the same key.",
        ),
    ]


# The account's token bucket, on every answer of a spend while its rate limit is on (the
# settings RATE_LIMIT_ACCOUNT_PER_MINUTE and RATE_LIMIT_ACCOUNT_BURST, or the account's own).
RATE_LIMIT_HEADERS = [
    OpenApiParameter(name, int, OpenApiParameter.HEADER, response=[201, 429], description=description)
    for name, description in (
        ("RateLimit-Limit", "Spends the account may make at once (its burst); refilled at its rate a minute."),
        ("RateLimit-Remaining", "Spends it may make now, before waiting."),
        ("RateLimit-Reset", "Seconds until it may make RateLimit-Limit spends at once again."),
    )
]

SERVICE_READ_ERRORS = errors(*SIGNED_IN, "not_found")
# A route with query parameters: a long query is refused before it reaches the route.
LEDGER_ERRORS = errors(*SIGNED_IN, "validation_error", "uri_too_long", "not_found")
SPEND_ERRORS = errors(
    *SIGNED_IN, *CREDIT_MOVING, "not_found", "insufficient_credits", "account_suspended", "daily_cap_reached"
)
HOLD_SETTLE_ERRORS = errors(*SIGNED_IN, *CREDIT_MOVING, "not_found", "hold_not_pending", "hold_expired")
REFUND_ERRORS = errors(*SIGNED_IN, *CREDIT_MOVING, "not_found", "debit_already_refunded")
# A batch answers 200 with each item's own status and body (those of the single debit route).
BATCH_ERRORS = errors(*SIGNED_IN, *WITH_BODY)
USER_READ_ERRORS = errors(*SIGNED_IN)
USER_LEDGER_ERRORS = errors(*SIGNED_IN, "validation_error", "uri_too_long")
SIGNUP_ERRORS = errors(*WITH_BODY, "invitation_required")
# Open routes: only a malformed or wrong Authorization header, when one is sent, is refused.
PUBLIC_READ_ERRORS = errors("authentication_failed")
BUY_ERRORS = errors(*SIGNED_IN, *WITH_BODY, "account_suspended", "payment_provider_error", "payments_unavailable")

_LIMIT = cast(serializers.IntegerField, LedgerQuery().fields["limit"])
LEDGER_PARAMETERS = [
    OpenApiParameter(
        "cursor",
        {"type": "string", "pattern": CURSOR_PATTERN},
        description="`next_cursor` of the previous page (opaque).",
    ),
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": _LIMIT.min_value, "maximum": _LIMIT.max_value, "default": _LIMIT.default},
        description=f"Entries per page: {_LIMIT.min_value} to {_LIMIT.max_value}, default {_LIMIT.default}.",
    ),
]


# What DRF's CharField refuses, as patterns: a NUL anywhere, and (trimming, unless blank is
# allowed) text that str.strip() leaves empty. _BLANK is every character str.isspace() holds true.
_BLANK = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = r"^[^\x00]*$"
NON_BLANK_TEXT_PATTERN = rf"^[^\x00]*[^\x00{_BLANK}][^\x00]*$"

_NOT_FREE_TEXT = (serializers.SlugField, serializers.EmailField, serializers.RegexField, serializers.URLField)


def text_pattern(field: serializers.Field) -> str | None:
    """The pattern of a CharField's text, or None for a field that is not free text (a slug, an
    email, a choice) and says what it takes in its own way."""
    if not isinstance(field, serializers.CharField) or isinstance(field, _NOT_FREE_TEXT):
        return None
    if field.trim_whitespace and not field.allow_blank:
        return NON_BLANK_TEXT_PATTERN
    return TEXT_PATTERN


class StrictRequestScheme(OpenApiSerializerExtension):
    """A request body of a StrictSerializer refuses fields it does not know: `additionalProperties:
    false`. One that names exactly one of some fields (`exactly_one_of`, a spend's operation or
    credits) says so with a `oneOf` of each alone. Its free text says what text it refuses."""

    target_class = "accounts.serializers.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
            one_of = getattr(self.target, "exactly_one_of", ())
            if one_of:
                schema["oneOf"] = [{"required": [name]} for name in one_of]
            for name, field in self.target.fields.items():
                pattern = text_pattern(field)
                if pattern is not None and name in schema["properties"]:
                    schema["properties"][name]["pattern"] = pattern
        return schema


# What each service route does, as the document says it (every operation has a description).
BALANCE_DOC = (
    "The account's balance: `available` (= `free` + `paid`), `held` (reserved by pending holds), and the "
    "unexpired lots with credits left, in the order spending takes them (`grants`, ids `grt_...`)."
)
DEBIT_DOC = (
    "Spend credits now: name an `operation` (its price, see GET /operations) or a number of `credits`. "
    "Taken from the lots in spend order (earliest expiry first). 402 when the account has too few."
)
HOLD_DOC = (
    "Reserve credits before the work (a two-phase spend): available drops now; capture all or part "
    "when the work is done, or release. A hold not settled within `expires_in` seconds is released."
)
# Said of both spends (debits and holds).
QUOTAS_DOC = (
    " Each account may spend at a limited rate (a token bucket: RateLimit-* headers; 429 `rate_limited`) "
    "and, when it has a daily cap, up to that many credits a UTC day (429 `daily_cap_reached`; a hold "
    "released, or captured for less, gives the rest back to its day). A 429 moves nothing and is not "
    "recorded under the Idempotency-Key: send the same request again after Retry-After."
)
HOLD_READ_DOC = "A hold and its status: `pending`, `captured`, `released` or `expired` (released when it lapsed)."
CAPTURE_DOC = (
    "Charge a pending hold: all of it, or `credits` of it (0 up to the held amount); the rest goes back "
    "to its lots. 409 hold_expired when it lapsed first (its credits went back)."
)
RELEASE_DOC = "Give all of a pending hold's credits back to their lots (status `released`)."
REFUND_DOC = "Give a debit's credits back to the lots it took them from, once (lots that expired since expire)."
BATCH_DOC = (
    "Up to 1,000 debits in one database transaction. Each item is the single debit route's body plus "
    "`account_id` and its own `idempotency_key`, and succeeds or fails on its own: its result carries the "
    "status and body the single route would answer (a key already used replays its stored answer, with "
    "`replayed` true). A batch item and a single call with the same key are the same request."
)
LEDGER_DOC = (
    "The account's ledger entries (`le_...`), newest first: every change of a lot or of held credits, with "
    "the balances after it and who made it. Page with `cursor` (the previous page's `next_cursor`)."
)
