-- Record an Idempotency-Key with its answer, in the movement's transaction. A key recorded
-- meanwhile by a concurrent request fails the insert with a unique violation once that request
-- commits, which rolls the whole movement back; the caller then replays the recorded answer.
-- No key (p_scope NULL): a movement made by a service of ours, not by an API request.
CREATE OR REPLACE FUNCTION billing_key_record(
    p_scope varchar, p_key varchar, p_request_hash varchar, p_now timestamptz, p_status integer, p_body json
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_scope IS NOT NULL THEN
        INSERT INTO billing_idempotencykey (scope, key, request_hash, created_at, status_code, response_body)
        VALUES (p_scope, p_key, p_request_hash, p_now, p_status, p_body::jsonb);
    END IF;
END
$$;
