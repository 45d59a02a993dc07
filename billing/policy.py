"""The free-credit policy in force: the admin-editable row, seeded from settings."""

from __future__ import annotations

from django.conf import settings

from billing.models import BillingPolicy


def policy_get() -> BillingPolicy:
    policy, _ = BillingPolicy.objects.get_or_create(
        pk=1,
        defaults={
            "free_credits_first_period": settings.FREE_CREDITS_FIRST_PERIOD,
            "free_credits_per_period": settings.FREE_CREDITS_PER_PERIOD,
            "latest_anchor_day": settings.FREE_PERIOD_LATEST_ANCHOR_DAY,
        },
    )
    return policy


def free_credits_for(policy: BillingPolicy, index: int) -> int:
    return policy.free_credits_first_period if index == 0 else policy.free_credits_per_period
