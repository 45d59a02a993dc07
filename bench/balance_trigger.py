"""What notifications' balance trigger costs a movement that crosses no threshold.

`python bench/balance_trigger.py [--accounts 1000] [--rounds 40] [--per-round 1000]` recreates
the database billing_bench_trigger, loads the accounts with plenty of credits (no movement below
crosses a threshold), then times, in alternating rounds inside PostgreSQL (no client round trip
in the figure), `per-round` movements with the trigger disabled (the ceiling) and enabled:
- `update`: the balance UPDATE alone, the statement the trigger is attached to;
- `debit`: a whole `billing_debit` call (lock, settle, take, ledger entries, balance).
It prints, per kind, the fastest round and the 10th percentile in microseconds per movement and
their ratio with / without. The machine's load moves the figures; the fastest rounds move least.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import common

TRIGGER = "notifications_balance_crossed"
OFF = f"ALTER TABLE accounts_account DISABLE TRIGGER {TRIGGER}"
ON = f"ALTER TABLE accounts_account ENABLE ALWAYS TRIGGER {TRIGGER}"
# Each round runs in one transaction that is rolled back, so every round starts from the same rows.
ROUND = {
    "update": """
        DO $$ DECLARE ids bigint[]; BEGIN
          SELECT array_agg(id ORDER BY id) INTO ids FROM accounts_account;
          FOR i IN 1..{n} LOOP
            UPDATE accounts_account SET available_credits = available_credits - 1
            WHERE id = ids[1 + (i % array_length(ids, 1))];
          END LOOP; END $$""",
    "debit": """
        DO $$ DECLARE ids varchar[]; r record; BEGIN
          SELECT array_agg(public_id ORDER BY id) INTO ids FROM accounts_account;
          FOR i IN 1..{n} LOOP
            SELECT outcome INTO r FROM billing_debit(ids[1 + (i % array_length(ids, 1))], 1, '', 'bench', NULL,
                'deb_' || substr(md5(i::text || random()::text), 1, 24), now(), 'service', 'bench', NULL, NULL, NULL);
          END LOOP; END $$""",
}


def give_credits(credits: int) -> None:
    from accounts.models import Account
    from billing.models import Grant
    from billing.services.ledger import Actor, grant_create

    for account in Account.objects.all():
        grant_create(
            account=account,
            source=Grant.Source.ADJUSTMENT,
            credits=credits,
            expires_at=None,
            actor=Actor.system("bench"),
            reason="bench",
        )


def round_micros(kind: str, trigger: str, n: int) -> float:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(trigger)
        started = time.perf_counter()
        cursor.execute(ROUND[kind].format(n=n))
        elapsed = time.perf_counter() - started
        transaction.set_rollback(True)
    return elapsed * 1e6 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=1000)
    common.add_database_options(parser, database="billing_bench_trigger", redis_db=12)
    args = parser.parse_args()
    common.check_database_name(parser, args)
    common.configure_django(args)
    common.recreate_database(args)
    common.load_accounts(args.accounts, datetime.now(UTC))
    common.sql("UPDATE accounts_account SET free_period_start = '9999-01-01'")  # no free grants: only ours
    give_credits(10**9)
    common.sql("VACUUM (ANALYZE) accounts_account, billing_grant")
    for kind in ROUND:
        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.rounds):
            times["without"].append(round_micros(kind, OFF, args.per_round))
            times["with"].append(round_micros(kind, ON, args.per_round))
        fastest = {k: min(v) for k, v in times.items()}
        p10 = {k: sorted(v)[len(v) // 10] for k, v in times.items()}
        print(
            f"{kind:6}  without: fastest {fastest['without']:8.2f} us, p10 {p10['without']:8.2f} us   "
            f"with: fastest {fastest['with']:8.2f} us, p10 {p10['with']:8.2f} us   "
            f"ratio: fastest {fastest['with'] / fastest['without']:.3f}, p10 {p10['with'] / p10['without']:.3f}"
        )


if __name__ == "__main__":
    main()
