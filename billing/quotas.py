"""The answers of the per-account quotas (decided by the spend functions on the locked account
row, billing/sql/billing_spend_quota.sql): the two refusals, both 429 with Retry-After, and the
RateLimit-* headers every spend answer carries while the account's rate limit is on."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from rest_framework.response import Response

from billing.errors import BillingError


def quota_settings() -> list[int]:
    """The settings' limits, as the spend functions take them (an account's own override wins)."""
    return [settings.RATE_LIMIT_ACCOUNT_PER_MINUTE, settings.RATE_LIMIT_ACCOUNT_BURST, settings.DAILY_CAP_CREDITS]


class QuotaExceeded(BillingError):
    """A spend over one of the account's quotas: nothing moved, and nothing is recorded under the
    Idempotency-Key, so the same request may be sent again after `retry_after` seconds."""

    status_code = 429

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)


class RateLimited(QuotaExceeded):
    code = "rate_limited"
    default_message = "Too many spends for this account: retry after `retry_after` seconds. Nothing moved."


class DailyCapReached(QuotaExceeded):
    code = "daily_cap_reached"
    default_message = "The account's spending cap for this UTC day is reached; nothing moved."


QUOTA_REFUSALS: dict[str, type[QuotaExceeded]] = {"rate_limited": RateLimited, "daily_cap_reached": DailyCapReached}


@dataclass(frozen=True)
class RateLimitState:
    """The account's token bucket after a spend: its size, whole spends left, and seconds until it
    is full again."""

    limit: int
    remaining: int
    reset: int


def with_quota_headers(response: Response, rate: RateLimitState | None, refusal: BillingError | None) -> Response:
    """The RateLimit-* headers of the account's bucket, and Retry-After on a quota's refusal."""
    if rate is not None:
        response["RateLimit-Limit"] = str(rate.limit)
        response["RateLimit-Remaining"] = str(rate.remaining)
        response["RateLimit-Reset"] = str(rate.reset)
    if isinstance(refusal, QuotaExceeded):
        response["Retry-After"] = str(refusal.details["retry_after"])
    return response
