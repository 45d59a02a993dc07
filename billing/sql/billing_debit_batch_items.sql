-- A batch's items (billing_debit_batch's p_items) in their order, each with its place (from 1) and
-- the slot of its account among p_public_ids (billing_debit_batch_accounts); slot NULL for an
-- account that does not exist. Inlined by the planner.
CREATE OR REPLACE FUNCTION billing_debit_batch_items(p_items jsonb, p_public_ids varchar[])
RETURNS TABLE (place bigint, credits bigint, operation varchar, reference varchar, metadata jsonb,
               public_id varchar, slot bigint)
LANGUAGE sql STABLE AS $$
    SELECT i.place, i.credits, i.operation, i.reference, i.metadata, i.public_id, s.slot
    FROM ROWS FROM (jsonb_to_recordset(p_items)
                    AS (account varchar, credits bigint, operation varchar, reference varchar, metadata jsonb,
                        public_id varchar)) WITH ORDINALITY AS i(account, credits, operation, reference, metadata,
                                                                 public_id, place)
    LEFT JOIN unnest(p_public_ids) WITH ORDINALITY AS s(public_id, slot) ON s.public_id = i.account
    ORDER BY i.place
$$;
