from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.models import ServiceKey
from accounts.services import service_key_revoke


class Command(BaseCommand):
    help = "Revoke a service API key by its id or its prefix (sk_...)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("key", help="The key's id, or the first characters of the key as shown in admin.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        ident = options["key"].strip()
        keys = (
            ServiceKey.objects.filter(pk=int(ident))
            if ident.isdigit()
            else ServiceKey.objects.filter(prefix=ident[:10])
        )
        if len(ident) < 1 or keys.count() != 1:
            raise CommandError(f"no single service key matches {ident!r}")
        key = keys.get()
        service_key_revoke(key=key)
        self.stdout.write(f"Revoked service key {key.pk} '{key.name}'.")
