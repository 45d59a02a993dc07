from __future__ import annotations

from django.core.management.base import BaseCommand

from billing.migrations_seed import CREDIT_PACKS, OPERATIONS
from billing.models import CreditPack, Operation


class Command(BaseCommand):
    help = "Create the default operations and credit packs if they are missing (safe to run again)."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        created = 0
        for code, credits, description in OPERATIONS:
            _, made = Operation.objects.get_or_create(
                code=code, defaults={"credits": credits, "description": description}
            )
            created += made
        self.stdout.write(f"seed: {created} operation(s) created, {len(OPERATIONS) - created} already present")
        packs = 0
        for slug, name, credits, price_cents, currency in CREDIT_PACKS:
            _, made = CreditPack.objects.get_or_create(
                slug=slug, defaults={"name": name, "credits": credits, "price_cents": price_cents, "currency": currency}
            )
            packs += made
        self.stdout.write(f"seed: {packs} credit pack(s) created, {len(CREDIT_PACKS) - packs} already present")
