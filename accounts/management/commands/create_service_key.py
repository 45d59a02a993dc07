from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.ids import service_key_public_id
from accounts.services import service_key_create


class Command(BaseCommand):
    help = "Create a service API key. The key is printed once, as the last line; only its hash is kept."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("name", help="What the key is for, e.g. 'generation-service'.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        name = options["name"].strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise CommandError("NAME must be 1 to 100 printable characters")
        key, raw = service_key_create(name=name)
        self.stdout.write(
            f"Created service key {service_key_public_id(key.pk)} '{key.name}'. Store it now; it is not shown again:"
        )
        self.stdout.write(raw)
