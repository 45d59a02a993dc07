-- A batch's accounts (billing_debit_batch; p_items as it takes them), locked and read by one
-- statement in id order, the order every multi-account writer locks in, so that batches cannot
-- deadlock each other; then each settled (billing_spend_settle) before any item spends from it.
-- With their public ids, in the same order.
CREATE OR REPLACE FUNCTION billing_debit_batch_accounts(
    p_items jsonb, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    OUT accts accounts_account[], OUT public_ids varchar[]
)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT coalesce(array_agg(l.a), '{}'), coalesce(array_agg((l.a).public_id), '{}')
    INTO accts, public_ids
    FROM (SELECT a FROM accounts_account a
          WHERE a.public_id IN (SELECT DISTINCT x->>'account' FROM jsonb_array_elements(p_items) x)
          ORDER BY a.id FOR UPDATE) l;
    FOR slot IN 1 .. cardinality(accts) LOOP
        accts[slot] := billing_spend_settle(accts[slot], p_now, p_actor_type, p_actor_id);
    END LOOP;
END
$$;
