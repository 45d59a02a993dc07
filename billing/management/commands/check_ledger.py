from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Account
from billing.integrity import CHECKS, ledger_breaches


class Command(BaseCommand):
    help = "Verify every ledger invariant; exit 1 with a report of each breach."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--account", action="append", default=[], help="Only this account (acct_...); repeatable.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        account_ids = None
        if options["account"]:
            found = dict(Account.objects.filter(public_id__in=options["account"]).values_list("public_id", "pk"))
            missing = sorted(set(options["account"]) - set(found))
            if missing:
                raise CommandError(f"unknown account(s): {', '.join(missing)}")
            account_ids = list(found.values())
        breaches = ledger_breaches(account_ids=account_ids)
        if not breaches:
            self.stdout.write(f"ledger ok: {len(CHECKS)} checks passed")
            return
        self.stdout.write(f"ledger BROKEN: {len(breaches)} breach(es)")
        for breach in breaches:
            self.stdout.write(f"  {breach}")
        raise SystemExit(1)
