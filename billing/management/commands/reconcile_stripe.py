from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from billing.services.reconciliation import stripe_reconcile


class Command(BaseCommand):
    help = "Fulfil purchases Stripe was paid for whose webhook never arrived; report what was fixed."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--hours",
            type=int,
            default=settings.STRIPE_RECONCILE_WINDOW_HOURS,
            help=f"How far back to look, 1 to {settings.STRIPE_RECONCILE_MAX_WINDOW_HOURS} (default %(default)s).",
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        hours, most = options["hours"], settings.STRIPE_RECONCILE_MAX_WINDOW_HOURS
        if not 1 <= hours <= most:
            raise CommandError(f"--hours must be from 1 to {most} ({most // 24} days), got {hours}")
        report = stripe_reconcile(window_hours=hours)
        for line in report.lines():
            self.stdout.write(line)
        if report.errors:
            raise SystemExit(1)
