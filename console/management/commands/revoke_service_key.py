from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.ids import row_id_of, service_key_public_id
from accounts.models import ServiceKey
from console.services import Operator, service_key_revoke_audited


class Command(BaseCommand):
    help = "Revoke a service API key by its id (key_...) or its prefix (sk_...), recorded in the audit trail."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("key", help="The key's id (key_...), or the first characters of the key as shown in admin.")
        parser.add_argument("--reason", default="revoked from the command line", help="Why, for the audit trail.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        ident = options["key"].strip()
        reason = options["reason"].strip()
        if not reason or len(reason) > 1000:
            raise CommandError("--reason must be 1 to 1,000 characters")
        row_id = row_id_of("key_", ident)
        keys = (
            ServiceKey.objects.filter(pk=row_id) if row_id is not None else ServiceKey.objects.filter(prefix=ident[:10])
        )
        if not ident.startswith("sk_") and row_id is None or keys.count() != 1:
            raise CommandError(f"no single service key matches {ident!r}")
        key = keys.get()
        if not service_key_revoke_audited(operator=Operator.command("revoke_service_key"), key=key, reason=reason):
            seconds = settings.SERVICE_KEY_CACHE_SECONDS
            self.stderr.write(
                f"The cache could not be told (Redis unreachable): the key is refused within {seconds} seconds."
            )
        self.stdout.write(f"Revoked service key {service_key_public_id(key.pk)} '{key.name}'.")
