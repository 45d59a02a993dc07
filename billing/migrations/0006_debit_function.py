"""billing_spend(): the common debit or hold in one database call (billing/services/one_call.py).

The function does what billing.services.ledger.debit_create (kind `debit`) or hold_create (kind
`hold`) and the Idempotency-Key layer do for an account with nothing to settle, in the same order
and with the same rows: lock the account, read its lots in spend order, insert the debit or the
hold, take the credits lot by lot with one `debit` or `hold` entry each (running balances; a hold
moves the credits to held), write the cached balances, and record the key with the response
body. Called as a statement of its own in autocommit mode it is its own transaction, so
a debit costs one round trip instead of six, and the account lock is held only while the server
runs it.

Whenever the account needs more than that (unknown, suspended, a pending hold past its expiry,
the current period's free grant not yet made, a lot past its expiry), the function writes
nothing and answers `settle`: the caller then runs the Python service, which settles first.
Each statement in a VOLATILE PL/pgSQL function takes a fresh snapshot (READ COMMITTED), so the
lots are read after the account lock is granted and see every write committed before it, as
the Python service's separate statements do.

Outcomes: `made` (credits, available and held after), `insufficient` (available = what the
lots hold; nothing written), `replay` (the key is recorded already; nothing written),
`unknown_operation` (nothing written), `settle` (nothing written). A key recorded meanwhile by a
concurrent request makes the key INSERT fail with a unique violation after that request
commits, which rolls the whole call back; the caller then replays.
"""

from django.db import migrations

SPEND_FUNCTION = r"""
CREATE OR REPLACE FUNCTION billing_spend(
    p_kind varchar, p_account varchar, p_credits bigint, p_operation varchar, p_now timestamptz,
    p_expires_at timestamptz, p_public_id varchar, p_reference varchar, p_actor_type varchar,
    p_actor_id varchar, p_scope varchar, p_key varchar, p_request_hash varchar, p_body jsonb,
    OUT outcome text, OUT credits bigint, OUT available bigint, OUT held bigint
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    acct record;
    lot record;
    now_utc timestamp := p_now AT TIME ZONE 'UTC';
    first_utc timestamp;
    period_start timestamp;
    spendable bigint;
    lapsed boolean;
    made_id bigint;
    balance bigint;
    on_hold bigint;
    part bigint;
    still bigint;
BEGIN
    credits := p_credits;
    IF p_operation <> '' THEN
        SELECT o.credits INTO credits FROM billing_operation o WHERE o.code = p_operation AND o.active;
        IF NOT FOUND THEN
            outcome := 'unknown_operation';
            RETURN;
        END IF;
    END IF;

    -- A retry of a recorded key moves nothing (the caller reads the stored answer).
    PERFORM 1 FROM billing_idempotencykey k WHERE k.scope = p_scope AND k.key = p_key;
    IF FOUND THEN
        outcome := 'replay';
        RETURN;
    END IF;

    -- The one lock per account, always taken first.
    SELECT a.id, a.status, a.period_anchor_day, a.first_period_start, a.free_period_start,
           a.available_credits, a.held_credits
      INTO acct FROM accounts_account a WHERE a.public_id = p_account FOR UPDATE;
    IF NOT FOUND OR acct.status <> 'active' THEN
        outcome := 'settle';
        RETURN;
    END IF;

    -- A pending hold past its expiry is released first (by the Python service).
    IF acct.held_credits > 0 AND EXISTS (
        SELECT 1 FROM billing_hold h
        WHERE h.account_id = acct.id AND h.status = 'pending' AND h.expires_at <= p_now
    ) THEN
        outcome := 'settle';
        RETURN;
    END IF;

    -- The current free period (billing.periods.period_at): the latest anchor-day midnight UTC
    -- at or before now, or the first period if that is earlier than the first period's month.
    -- Its grant not yet made means the lazy refill is due (by the Python service).
    period_start := date_trunc('month', now_utc) + (acct.period_anchor_day - 1) * interval '1 day';
    IF period_start > now_utc THEN
        period_start := date_trunc('month', now_utc) - interval '1 month'
                        + (acct.period_anchor_day - 1) * interval '1 day';
    END IF;
    first_utc := acct.first_period_start AT TIME ZONE 'UTC';
    IF date_trunc('month', period_start) < date_trunc('month', first_utc) THEN
        period_start := first_utc;
    END IF;
    IF acct.free_period_start IS NULL OR acct.free_period_start < (period_start AT TIME ZONE 'UTC') THEN
        outcome := 'settle';
        RETURN;
    END IF;

    SELECT coalesce(sum(g.remaining), 0), coalesce(bool_or(g.expires_at <= p_now), false)
      INTO spendable, lapsed
      FROM billing_grant g WHERE g.account_id = acct.id AND g.remaining > 0;
    IF lapsed THEN  -- a lot past its expiry is expired first (by the Python service)
        outcome := 'settle';
        RETURN;
    END IF;
    IF spendable < credits THEN
        outcome := 'insufficient';
        available := spendable;
        RETURN;
    END IF;

    IF p_kind = 'debit' THEN
        INSERT INTO billing_debit
            (public_id, account_id, credits, operation, reference, metadata, actor_type, actor_id, created_at)
        VALUES (p_public_id, acct.id, credits, p_operation, p_reference, '{}'::jsonb,
                p_actor_type, p_actor_id, p_now)
        RETURNING id INTO made_id;
    ELSIF p_kind = 'hold' THEN
        INSERT INTO billing_hold
            (public_id, account_id, credits, captured_credits, status, operation, reference,
             actor_type, actor_id, created_at, expires_at)
        VALUES (p_public_id, acct.id, credits, 0, 'pending', p_operation, p_reference,
                p_actor_type, p_actor_id, p_now, p_expires_at)
        RETURNING id INTO made_id;
    ELSE
        RAISE EXCEPTION USING MESSAGE = 'billing_spend: unknown kind ' || p_kind;
    END IF;

    -- Earliest expiry first, never-expiring last, then priority, then oldest (SPEND_ORDER).
    balance := acct.available_credits;
    on_hold := acct.held_credits;
    still := credits;
    FOR lot IN
        SELECT g.id, g.remaining FROM billing_grant g
        WHERE g.account_id = acct.id AND g.remaining > 0
        ORDER BY g.expires_at ASC NULLS LAST, g.priority, g.created_at, g.id
    LOOP
        part := least(lot.remaining, still);
        UPDATE billing_grant SET remaining = remaining - part WHERE id = lot.id;
        balance := balance - part;
        IF p_kind = 'hold' THEN
            on_hold := on_hold + part;
        END IF;
        INSERT INTO billing_ledgerentry
            (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id,
             debit_id, actor_type, actor_id, reference, created_at)
        VALUES (acct.id, p_kind, -part, CASE WHEN p_kind = 'hold' THEN part ELSE 0 END, balance, on_hold, lot.id,
                CASE WHEN p_kind = 'hold' THEN made_id END, CASE WHEN p_kind = 'debit' THEN made_id END,
                p_actor_type, p_actor_id, p_reference, p_now);
        still := still - part;
        EXIT WHEN still = 0;
    END LOOP;
    UPDATE accounts_account SET available_credits = balance, held_credits = on_hold WHERE id = acct.id;

    available := balance;
    held := on_hold;
    -- The answer: a debit shows the balance after it, a hold does not.
    INSERT INTO billing_idempotencykey (scope, key, request_hash, created_at, status_code, response_body)
    VALUES (p_scope, p_key, p_request_hash, p_now, 201,
            p_body || CASE WHEN p_kind = 'debit'
                           THEN jsonb_build_object('credits', credits, 'balance',
                                                   jsonb_build_object('available', available, 'held', held))
                           ELSE jsonb_build_object('credits', credits) END);
    outcome := 'made';
END
$$;
"""

DROP_SPEND_FUNCTION = (
    "DROP FUNCTION IF EXISTS billing_spend(varchar, varchar, bigint, varchar, timestamptz, timestamptz, varchar, "
    "varchar, varchar, varchar, varchar, varchar, varchar, jsonb)"
)


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(SPEND_FUNCTION)


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SPEND_FUNCTION)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_grant_account_index_in_unique")]
    operations = [migrations.RunPython(create_function, drop_function)]
