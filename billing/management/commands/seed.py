from __future__ import annotations

from django.core.management.base import BaseCommand

from billing.migrations_seed import OPERATIONS
from billing.models import Operation


class Command(BaseCommand):
    help = "Create the default operations if they are missing (safe to run again)."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        created = 0
        for code, credits, description in OPERATIONS:
            _, made = Operation.objects.get_or_create(
                code=code, defaults={"credits": credits, "description": description}
            )
            created += made
        self.stdout.write(f"seed: {created} operation(s) created, {len(OPERATIONS) - created} already present")
