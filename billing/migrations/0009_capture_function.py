"""billing_capture(): the common capture of a hold in one database call (billing/services/one_call.py).

It does what billing.services.ledger.hold_capture and the Idempotency-Key layer do for a pending
hold that has not expired, in the same order and with the same rows: lock the hold's account,
read the hold, write the `capture` entry, give each lot the uncaptured rest of what it held (the
lots charged in the order they were held) with a `release` entry, expiring it at once with an
`expire` entry if the lot has lapsed meanwhile, mark the hold captured, write the cached
balances, and record the key with the answer (the hold as the API shows it).

It writes nothing and answers `settle` when the hold is unknown, not pending, past its expiry,
or the amount is more than it holds: the caller then runs hold_capture, which refuses or
releases as the API documents. `replay` when the key is recorded already. A key recorded
meanwhile by a concurrent request fails the key INSERT, which rolls the whole call back.
"""

from django.db import migrations

# A timestamptz as the API writes it (DRF's DateTimeField in UTC): ISO 8601, microseconds only
# when there are any, "Z" for UTC.
ISO_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_iso(value timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
           || CASE WHEN mod(extract(microseconds FROM value)::bigint, 1000000) <> 0
                   THEN to_char(value AT TIME ZONE 'UTC', '.US') ELSE '' END
           || 'Z'
$$;
"""

CAPTURE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_capture(
    p_hold varchar, p_credits bigint, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_scope varchar, p_key varchar, p_request_hash varchar,
    OUT outcome text, OUT body jsonb
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    acct record;
    h record;
    lot record;
    amount bigint;
    still bigint;
    charged bigint;
    rest bigint;
    balance bigint;
    on_hold bigint;
BEGIN
    PERFORM 1 FROM billing_idempotencykey k WHERE k.scope = p_scope AND k.key = p_key;
    IF FOUND THEN
        outcome := 'replay';
        RETURN;
    END IF;

    -- The one lock per account, always taken first: the hold's account, found through the hold.
    SELECT a.id, a.public_id, a.available_credits, a.held_credits INTO acct
      FROM accounts_account a JOIN billing_hold x ON x.account_id = a.id
     WHERE x.public_id = p_hold FOR UPDATE OF a;
    IF NOT FOUND THEN
        outcome := 'settle';
        RETURN;
    END IF;
    -- The hold as it is now (a fresh snapshot, after the lock).
    SELECT * INTO h FROM billing_hold WHERE public_id = p_hold;
    amount := coalesce(p_credits, h.credits);
    IF h.status <> 'pending' OR h.expires_at <= p_now OR amount < 0 OR amount > h.credits THEN
        outcome := 'settle';
        RETURN;
    END IF;

    balance := acct.available_credits;
    on_hold := acct.held_credits - amount;
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id,
         debit_id, actor_type, actor_id, reference, created_at)
    VALUES (acct.id, 'capture', 0, -amount, balance, on_hold, NULL, h.id, NULL,
            p_actor_type, p_actor_id, h.reference, p_now);

    still := amount;
    FOR lot IN
        SELECT e.grant_id, -e.credits AS held, g.expires_at
        FROM billing_ledgerentry e JOIN billing_grant g ON g.id = e.grant_id
        WHERE e.hold_id = h.id AND e.kind = 'hold'
        ORDER BY e.id
    LOOP
        charged := least(lot.held, still);
        still := still - charged;
        rest := lot.held - charged;
        CONTINUE WHEN rest <= 0;
        balance := balance + rest;
        on_hold := on_hold - rest;
        INSERT INTO billing_ledgerentry
            (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id,
             debit_id, actor_type, actor_id, reference, created_at)
        VALUES (acct.id, 'release', rest, -rest, balance, on_hold, lot.grant_id, h.id, NULL,
                p_actor_type, p_actor_id, h.reference, p_now);
        IF lot.expires_at IS NOT NULL AND lot.expires_at <= p_now THEN
            -- Back to a lot that has lapsed: the credits expire at once; the lot is unchanged.
            balance := balance - rest;
            INSERT INTO billing_ledgerentry
                (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id,
                 debit_id, actor_type, actor_id, reference, created_at)
            VALUES (acct.id, 'expire', -rest, 0, balance, on_hold, lot.grant_id, NULL, NULL,
                    p_actor_type, p_actor_id, h.reference, p_now);
        ELSE
            UPDATE billing_grant SET remaining = remaining + rest WHERE id = lot.grant_id;
        END IF;
    END LOOP;

    UPDATE billing_hold SET status = 'captured', captured_credits = amount, settled_at = p_now WHERE id = h.id;
    UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;

    body := jsonb_build_object(
        'id', h.public_id, 'account', acct.public_id, 'credits', h.credits, 'captured_credits', amount,
        'status', 'captured', 'operation', h.operation, 'reference', h.reference,
        'created_at', billing_iso(h.created_at), 'expires_at', billing_iso(h.expires_at),
        'settled_at', billing_iso(p_now));
    INSERT INTO billing_idempotencykey (scope, key, request_hash, created_at, status_code, response_body)
    VALUES (p_scope, p_key, p_request_hash, p_now, 200, body);
    outcome := 'made';
END
$$;
"""


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ISO_FUNCTION)
        schema_editor.execute(CAPTURE_FUNCTION)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS billing_capture(varchar, bigint, timestamptz, varchar, varchar, varchar, "
            "varchar, varchar)"
        )
        schema_editor.execute("DROP FUNCTION IF EXISTS billing_iso(timestamptz)")


class Migration(migrations.Migration):
    dependencies = [("billing", "0008_drop_grant_expiring_index")]
    operations = [migrations.RunPython(create_functions, drop_functions)]
