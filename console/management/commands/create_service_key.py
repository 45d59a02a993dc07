from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.ids import service_key_public_id
from console.services import Operator, service_key_create_audited


class Command(BaseCommand):
    help = (
        "Create a service API key, recorded in the audit trail. The key is printed once, as the last line; "
        "only its hash is kept."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("name", help="What the key is for, e.g. 'generation-service'.")
        parser.add_argument("--reason", default="created from the command line", help="Why, for the audit trail.")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        name = options["name"].strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise CommandError("NAME must be 1 to 100 printable characters")
        reason = options["reason"].strip()
        if not reason or len(reason) > 1000:
            raise CommandError("--reason must be 1 to 1,000 characters")
        key, raw = service_key_create_audited(operator=Operator.command("create_service_key"), name=name, reason=reason)
        self.stdout.write(
            f"Created service key {service_key_public_id(key.pk)} '{key.name}'. Store it now; it is not shown again:"
        )
        self.stdout.write(raw)
