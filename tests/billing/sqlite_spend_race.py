"""Run by test_sqlite_concurrency in its own process: races debits on the embedded SQLite.

Prints one JSON line with what happened. Settings come from the environment the test sets.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import django


def main() -> None:
    threads, attempts_each, credits = (int(arg) for arg in sys.argv[1:4])
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from billing.errors import InsufficientCredits
    from billing.integrity import ledger_breaches
    from billing.services.ledger import Actor, debit_create
    from tests.billing.factories import give, make_account

    call_command("migrate", verbosity=0)
    account = make_account()
    give(account, credits)
    results = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def spend() -> None:
        barrier.wait()
        try:
            for i in range(attempts_each):
                try:
                    debit_create(account=account, credits=1, actor=Actor("service", "race"), reference=f"r{i}")
                    outcome = "ok"
                except InsufficientCredits:
                    outcome = "refused"
                with lock:
                    results[outcome] += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=spend) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    account.refresh_from_db()
    print(
        json.dumps({**results, "available": account.available_credits, "breaches": [str(b) for b in ledger_breaches()]})
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    main()
