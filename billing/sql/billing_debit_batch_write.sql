-- The writes of a batch after its last item (billing_debit_batch): the debits made (p_debits, in
-- item order), their lots taken in one billing_take (p_balances[i] and p_on_holds[i]: the
-- account's credits just before debit i), and the accounts' rows from the batch's copies
-- (p_accts), each written once and only when it changed. So the balance trigger sees one change
-- per account, and its events carry the balances after the batch.
CREATE OR REPLACE FUNCTION billing_debit_batch_write(
    p_debits billing_debit[], p_balances bigint[], p_on_holds bigint[], p_accts accounts_account[],
    p_now timestamptz, p_actor_type varchar, p_actor_id varchar
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO billing_debit SELECT * FROM unnest(p_debits);
    PERFORM billing_take('debit', t.accounts, t.credits, array_fill(NULL::bigint, ARRAY[cardinality(p_debits)]),
                         t.ids, t.refs, p_balances, p_on_holds, p_now, p_actor_type, p_actor_id)
    FROM (SELECT coalesce(array_agg(d.account_id ORDER BY d.ordinality), '{}') AS accounts,
                 coalesce(array_agg(d.credits ORDER BY d.ordinality), '{}') AS credits,
                 coalesce(array_agg(d.id ORDER BY d.ordinality), '{}') AS ids,
                 coalesce(array_agg(d.reference ORDER BY d.ordinality), '{}') AS refs
          FROM unnest(p_debits) WITH ORDINALITY AS d) t;
    UPDATE accounts_account a
    SET available_credits = u.available_credits, held_credits = u.held_credits, rate_tokens = u.rate_tokens,
        rate_checked_at = u.rate_checked_at, day_spent = u.day_spent, day_started = u.day_started
    FROM unnest(p_accts) u
    WHERE a.id = u.id
      AND (a.available_credits, a.held_credits, a.rate_tokens, a.rate_checked_at, a.day_spent, a.day_started)
          IS DISTINCT FROM
          (u.available_credits, u.held_credits, u.rate_tokens, u.rate_checked_at, u.day_spent, u.day_started);
END
$$;
