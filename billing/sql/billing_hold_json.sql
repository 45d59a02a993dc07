-- A hold as the API shows it: the one place this shape is written (HoldOut only describes it).
CREATE OR REPLACE FUNCTION billing_hold_json(p_hold billing_hold, p_account varchar) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', p_hold.public_id, 'account', p_account, 'credits', p_hold.credits,
        'captured_credits', p_hold.captured_credits, 'status', p_hold.status, 'operation', p_hold.operation,
        'reference', p_hold.reference, 'created_at', billing_iso(p_hold.created_at),
        'expires_at', billing_iso(p_hold.expires_at), 'settled_at', billing_iso(p_hold.settled_at))
$$;
