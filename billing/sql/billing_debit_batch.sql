-- Many debits in one transaction, each made or refused on its own, in the order given. p_items is
-- a JSON array of {account (public id), credits, operation, reference, metadata, public_id}.
-- Every account of the batch is locked, read and settled first (billing_debit_batch_accounts).
-- The items then run on the batch's copy of each account row: a debit made
-- (billing_debit_batch_row) counts on the copy. After the last item billing_debit_batch_write
-- writes the debits, their lots and entries and the accounts, each once. Each item counts toward
-- its account's quotas as a single debit does (billing_spend_quota, with the settings' limits
-- p_per_minute, p_burst and p_daily_cap), on the same copy.
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
    acct accounts_account;
    item record;
    made billing_debit;
    debits billing_debit[] := '{}';
    debit_ids regclass := pg_get_serial_sequence('billing_debit', 'id');
    quota record;
    -- Each debit's account's credits just before it (billing_take's balances).
    balances bigint[] := '{}';
    on_holds bigint[] := '{}';
BEGIN
    SELECT b.accts, b.public_ids INTO accts, public_ids
    FROM billing_debit_batch_accounts(p_items, p_now, p_actor_type, p_actor_id) b;
    FOR item IN SELECT * FROM billing_debit_batch_items(p_items, public_ids) LOOP
        n := item.place;
        credits := item.credits;
        body := NULL;
        retry_after := NULL;
        acct := accts[item.slot];  -- NULL for an account that does not exist
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
            made := billing_debit_batch_row(debit_ids, item.public_id, acct.id, credits, item.operation,
                                            item.reference, item.metadata, p_actor_type, p_actor_id, p_now);
            debits := debits || made;
            balances := balances || available;
            on_holds := on_holds || held;
            available := available - credits;
            acct.available_credits := available;
            accts[item.slot] := acct;
            body := billing_debit_json(made, acct.public_id, available, held);
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM billing_debit_batch_write(debits, balances, on_holds, accts, p_now, p_actor_type, p_actor_id);
END
$$;
