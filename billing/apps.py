from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.audit import AuditCollector
        from billing.metrics import LedgerStateCollector
        from billing.schedules import install_schedules
        from config.metrics import register_collector

        # Beat reads schedules from the database; every migrate makes sure ours are there.
        post_migrate.connect(install_schedules, sender=self, dispatch_uid="billing.install_schedules")
        # /metrics serves the ledger's state next to the request figures.
        register_collector(LedgerStateCollector())
        register_collector(AuditCollector())  # the nightly audits' alarms (billing/audit.py)
