"""Default rows every installation needs: the priced operations and the credit pack."""

from __future__ import annotations

from billing.migrations_seed import CREDIT_PACKS, OPERATIONS
from billing.models import CreditPack, Operation


def seed_defaults() -> tuple[int, int]:
    """Create the default operations and packs that are missing; returns how many of each.

    Existing rows are left as operators set them (prices, active flags).
    """
    operations = 0
    for code, credits, description in OPERATIONS:
        _, made = Operation.objects.get_or_create(code=code, defaults={"credits": credits, "description": description})
        operations += made
    packs = 0
    for slug, name, credits, price_cents, currency in CREDIT_PACKS:
        _, made = CreditPack.objects.get_or_create(
            slug=slug, defaults={"name": name, "credits": credits, "price_cents": price_cents, "currency": currency}
        )
        packs += made
    return operations, packs
