"""The answers of the per-account quotas (decided by the spend functions on the locked account
row, billing/sql/billing_spend_quota.sql): the two refusals, both 429 with Retry-After (but for a
spend larger than the whole daily cap, which never fits), and the
RateLimit-* headers every spend answer carries while the account's rate limit is on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.http import HttpResponseBase

from billing.errors import BillingError
from billing.models import BillingPolicy

# The policy row's quotas are read at most this often per process: an operator's change applies
# within that long, and a spend makes no query for it.
POLICY_SECONDS = 5.0
_policy: tuple[float, tuple[int | None, int | None, int | None]] | None = None


def quota_settings() -> list[int]:
    """The limits of every account without its own, as the spend functions take them (an
    account's own override wins): the billing policy's where an operator set them, else the
    settings'."""
    per_minute, burst, daily_cap = _policy_quotas()
    return [
        settings.RATE_LIMIT_ACCOUNT_PER_MINUTE if per_minute is None else per_minute,
        settings.RATE_LIMIT_ACCOUNT_BURST if burst is None else burst,
        settings.DAILY_CAP_CREDITS if daily_cap is None else daily_cap,
    ]


def _policy_quotas() -> tuple[int | None, int | None, int | None]:
    global _policy
    now = time.monotonic()
    if _policy is None or now - _policy[0] >= POLICY_SECONDS:
        row = (
            BillingPolicy.objects.filter(pk=1)
            .values_list("rate_limit_per_minute", "rate_limit_burst", "daily_cap_credits")
            .first()
        )
        _policy = (now, row or (None, None, None))
    return _policy[1]


def quota_policy_forget() -> None:
    """Read the policy's quotas afresh at the next spend (this process saved them)."""
    global _policy
    _policy = None


class QuotaExceeded(BillingError):
    """A spend over one of the account's quotas: nothing moved, and nothing is recorded under the
    Idempotency-Key, so the same request may be sent again after `retry_after` seconds (None:
    never, for a spend larger than the whole daily cap)."""

    status_code = 429
    never_message = ""

    def __init__(self, *, retry_after: int | None) -> None:
        super().__init__(self.never_message if retry_after is None else None, retry_after=retry_after)


class RateLimited(QuotaExceeded):
    code = "rate_limited"
    default_message = "Too many spends for this account: retry after `retry_after` seconds. Nothing moved."


class DailyCapReached(QuotaExceeded):
    code = "daily_cap_reached"
    default_message = "The account's spending cap for this UTC day is reached; nothing moved."
    never_message = (
        "The spend is larger than the account's whole daily spending cap: it can never be made. Nothing moved."
    )


QUOTA_REFUSALS: dict[str, type[QuotaExceeded]] = {"rate_limited": RateLimited, "daily_cap_reached": DailyCapReached}


HttpResponseT = TypeVar("HttpResponseT", bound=HttpResponseBase)


@dataclass(frozen=True)
class RateLimitState:
    """The account's token bucket after a spend: its size, whole spends left, and seconds until it
    is full again."""

    limit: int
    remaining: int
    reset: int


def with_quota_headers(
    response: HttpResponseT, rate: RateLimitState | None, refusal: BillingError | None
) -> HttpResponseT:
    """The RateLimit-* headers of the account's bucket, and Retry-After on a quota's refusal."""
    if rate is not None:
        response["RateLimit-Limit"] = str(rate.limit)
        response["RateLimit-Remaining"] = str(rate.remaining)
        response["RateLimit-Reset"] = str(rate.reset)
    if isinstance(refusal, QuotaExceeded) and refusal.details["retry_after"] is not None:
        response["Retry-After"] = str(refusal.details["retry_after"])
    return response
