-- Whether an Idempotency-Key is recorded already: a retry then moves nothing, and the caller
-- answers what was recorded.
CREATE OR REPLACE FUNCTION billing_key_recorded(p_scope varchar, p_key varchar) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_scope IS NOT NULL
           AND EXISTS (SELECT 1 FROM billing_idempotencykey k WHERE k.scope = p_scope AND k.key = p_key)
$$;
