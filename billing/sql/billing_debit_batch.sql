-- Many debits in one transaction, each made or refused on its own, in the order given. p_items is
-- a JSON array of {account (public id), credits, operation, reference, metadata, public_id}.
-- Every account of the batch is locked first, by one statement in id order (the order every
-- multi-account writer takes, so batches cannot deadlock each other), and settled before its
-- first item. One row per item, by its place n (from 1): the outcome as billing_debit's, the
-- account's balances right after it, and for a debit made its body (billing_debit_json).
CREATE OR REPLACE FUNCTION billing_debit_batch(
    p_items jsonb, p_now timestamptz, p_actor_type varchar, p_actor_id varchar
) RETURNS TABLE (n bigint, outcome text, credits bigint, available bigint, held bigint, body json)
LANGUAGE plpgsql AS $$
DECLARE
    item record;
    acct accounts_account;
    settled bigint[] := '{}';
    made billing_debit;
    taken record;
BEGIN
    PERFORM 1 FROM accounts_account a
    WHERE a.public_id IN (SELECT DISTINCT x->>'account' FROM jsonb_array_elements(p_items) x)
    ORDER BY a.id FOR UPDATE;
    FOR item IN
        SELECT i.*
        FROM ROWS FROM (jsonb_to_recordset(p_items)
                        AS (account varchar, credits bigint, operation varchar, reference varchar, metadata jsonb,
                            public_id varchar)) WITH ORDINALITY AS i(account, credits, operation, reference, metadata,
                                                                     public_id, place)
        ORDER BY i.place
    LOOP
        n := item.place;
        credits := item.credits;
        body := NULL;
        SELECT * INTO acct FROM accounts_account a WHERE a.public_id = item.account;
        IF FOUND AND NOT acct.id = ANY (settled) THEN
            acct := billing_settle(acct, p_now, p_actor_type, p_actor_id);
            settled := settled || acct.id;
        END IF;
        available := acct.available_credits;
        held := acct.held_credits;
        outcome := billing_spend_outcome(acct, credits);
        IF outcome = 'made' THEN
            INSERT INTO billing_debit
                (public_id, account_id, credits, operation, reference, metadata, actor_type, actor_id, created_at)
            VALUES (item.public_id, acct.id, credits, coalesce(item.operation, ''), coalesce(item.reference, ''),
                    coalesce(item.metadata, '{}'::jsonb), p_actor_type, p_actor_id, p_now)
            RETURNING * INTO made;
            taken := billing_take(acct.id, credits, 'debit', NULL, made.id, p_now, p_actor_type, p_actor_id,
                                  coalesce(item.reference, ''), available, held);
            available := taken.balance;
            held := taken.on_hold;
            UPDATE accounts_account SET available_credits = available, held_credits = held WHERE id = acct.id;
            body := billing_debit_json(made, acct.public_id, available, held);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
