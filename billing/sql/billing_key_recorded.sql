-- Whether an Idempotency-Key is recorded already: a retry then moves nothing, and the caller
-- answers what was recorded. PL/pgSQL, not SQL: a SQL function with a subquery is not inlined,
-- and would be planned again on every call; PL/pgSQL keeps the query's plan for the session.
CREATE OR REPLACE FUNCTION billing_key_recorded(p_scope varchar, p_key varchar) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN p_scope IS NOT NULL
           AND EXISTS (SELECT 1 FROM billing_idempotencykey k WHERE k.scope = p_scope AND k.key = p_key);
END
$$;
