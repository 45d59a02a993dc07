from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from billing.services.reconciliation import stripe_reconcile


class Command(BaseCommand):
    help = "Fulfil purchases Stripe was paid for whose webhook never arrived; report what was fixed."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--hours",
            type=int,
            default=settings.STRIPE_RECONCILE_WINDOW_HOURS,
            help="How far back to look (default %(default)s).",
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        report = stripe_reconcile(window_hours=max(1, options["hours"]))
        for line in report.lines():
            self.stdout.write(line)
        if report.errors:
            raise SystemExit(1)
