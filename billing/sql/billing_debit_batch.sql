-- Many debits in one transaction, each made or refused on its own, in the order given. p_items is
-- a JSON array of {account (public id), credits, operation, reference, metadata, public_id}.
-- Every account of the batch is locked and read first, by one statement in id order (the order
-- every multi-account writer takes, so batches cannot deadlock each other), and settled before its
-- first item. The items then run on the batch's copy of each account row: a debit made draws an id
-- from billing_debit's sequence and counts on the copy. After the last item the debit rows are
-- written, every debit made takes its lots in one billing_take (the lots and the entries,
-- balance_after item by item), and the accounts' cached balances are written, each once. So the
-- balance trigger sees one change per account, and its events carry the balances after the batch.
-- Each item counts toward its account's quotas as a single debit does (billing_spend_quota, with
-- the settings' limits p_per_minute, p_burst and p_daily_cap), on the same copy.
-- One row per item, by its place n (from 1): the outcome as billing_debit's, the account's
-- balances right after it, for a debit made its body (billing_debit_json), and for a quota's
-- refusal the seconds to retry after.
CREATE OR REPLACE FUNCTION billing_debit_batch(
    p_items jsonb, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_per_minute integer, p_burst integer, p_daily_cap bigint
) RETURNS TABLE (n bigint, outcome text, credits bigint, available bigint, held bigint, body json,
                 retry_after integer)
LANGUAGE plpgsql AS $$
DECLARE
    accts accounts_account[];  -- the batch's accounts in id order; an item finds its own by slot
    public_ids varchar[];
    settled boolean[];
    acct accounts_account;
    item record;
    made billing_debit;
    debits billing_debit[] := '{}';
    debit_ids regclass := pg_get_serial_sequence('billing_debit', 'id');
    quota record;
    -- The takes of the debits made, by position (billing_take's arrays).
    take_accounts bigint[] := '{}';
    take_credits bigint[] := '{}';
    take_debits bigint[] := '{}';
    take_references varchar[] := '{}';
    take_balances bigint[] := '{}';
    take_on_holds bigint[] := '{}';
BEGIN
    SELECT coalesce(array_agg(l.a), '{}'), coalesce(array_agg((l.a).public_id), '{}')
    INTO accts, public_ids
    FROM (SELECT a FROM accounts_account a
          WHERE a.public_id IN (SELECT DISTINCT x->>'account' FROM jsonb_array_elements(p_items) x)
          ORDER BY a.id FOR UPDATE) l;
    settled := array_fill(false, ARRAY[cardinality(accts)]);
    FOR item IN
        SELECT i.place, i.credits, i.operation, i.reference, i.metadata, i.public_id, s.slot
        FROM ROWS FROM (jsonb_to_recordset(p_items)
                        AS (account varchar, credits bigint, operation varchar, reference varchar, metadata jsonb,
                            public_id varchar)) WITH ORDINALITY AS i(account, credits, operation, reference, metadata,
                                                                     public_id, place)
        LEFT JOIN unnest(public_ids) WITH ORDINALITY AS s(public_id, slot) ON s.public_id = i.account
        ORDER BY i.place
    LOOP
        n := item.place;
        credits := item.credits;
        body := NULL;
        retry_after := NULL;
        IF item.slot IS NULL THEN
            acct := NULL;
        ELSIF settled[item.slot] THEN
            acct := accts[item.slot];
        ELSE
            acct := billing_spend_settle(accts[item.slot], p_now, p_actor_type, p_actor_id);
            accts[item.slot] := acct;
            settled[item.slot] := true;
        END IF;
        available := acct.available_credits;
        held := acct.held_credits;
        outcome := billing_spend_outcome(acct, credits);
        IF outcome = 'made' THEN
            quota := billing_spend_quota(acct, credits, p_now, p_per_minute, p_burst, p_daily_cap);
            outcome := quota.outcome;
            retry_after := quota.retry_after;
        END IF;
        IF outcome = 'made' THEN
            acct := quota.acct;
            made := NULL;
            made.id := nextval(debit_ids);
            made.public_id := item.public_id;
            made.account_id := acct.id;
            made.credits := credits;
            made.operation := coalesce(item.operation, '');
            made.reference := coalesce(item.reference, '');
            made.metadata := coalesce(item.metadata, '{}'::jsonb);
            made.actor_type := p_actor_type;
            made.actor_id := p_actor_id;
            made.created_at := p_now;
            debits := debits || made;
            take_accounts := take_accounts || acct.id;
            take_credits := take_credits || credits;
            take_debits := take_debits || made.id;
            take_references := take_references || made.reference;
            take_balances := take_balances || available;
            take_on_holds := take_on_holds || held;
            available := available - credits;
            acct.available_credits := available;
            accts[item.slot] := acct;
            body := billing_debit_json(made, acct.public_id, available, held);
        END IF;
        RETURN NEXT;
    END LOOP;
    INSERT INTO billing_debit SELECT * FROM unnest(debits);
    PERFORM billing_take('debit', take_accounts, take_credits, array_fill(NULL::bigint, ARRAY[cardinality(debits)]),
                         take_debits, take_references, take_balances, take_on_holds, p_now, p_actor_type, p_actor_id);
    UPDATE accounts_account a
    SET available_credits = u.available_credits, held_credits = u.held_credits, rate_tokens = u.rate_tokens,
        rate_checked_at = u.rate_checked_at, day_spent = u.day_spent, day_started = u.day_started
    FROM unnest(accts) u
    WHERE a.id = u.id
      AND (a.available_credits, a.held_credits, a.rate_tokens, a.rate_checked_at, a.day_spent, a.day_started)
          IS DISTINCT FROM
          (u.available_credits, u.held_credits, u.rate_tokens, u.rate_checked_at, u.day_spent, u.day_started);
END
$$;
