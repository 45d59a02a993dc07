from __future__ import annotations

from django.core.management.base import BaseCommand

from billing.migrations_seed import CREDIT_PACKS, OPERATIONS
from billing.services.seed import seed_defaults


class Command(BaseCommand):
    help = "Create the default operations and credit packs if they are missing (safe to run again)."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        operations, packs = seed_defaults()
        self.stdout.write(f"seed: {operations} operation(s) created, {len(OPERATIONS) - operations} already present")
        self.stdout.write(f"seed: {packs} credit pack(s) created, {len(CREDIT_PACKS) - packs} already present")
