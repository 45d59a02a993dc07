-- A debit as the API shows it, with the account's balances right after it: the one place this
-- shape is written (DebitOut only describes it). json keeps the keys in this order.
CREATE OR REPLACE FUNCTION billing_debit_json(
    p_debit billing_debit, p_account varchar, p_available bigint, p_held bigint
) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', p_debit.public_id, 'account', p_account, 'credits', p_debit.credits,
        'operation', p_debit.operation, 'reference', p_debit.reference, 'metadata', p_debit.metadata,
        'status', CASE WHEN p_debit.refunded_at IS NULL THEN 'succeeded' ELSE 'refunded' END,
        'created_at', billing_iso(p_debit.created_at), 'refunded_at', billing_iso(p_debit.refunded_at),
        'balance', json_build_object('available', p_available, 'held', p_held))
$$;
