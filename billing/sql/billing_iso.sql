-- A timestamp as the API writes it (DRF's DateTimeField in UTC): ISO 8601, microseconds only
-- when there are any, "Z" for UTC. STABLE, as to_char is: the planner inlines it then.
CREATE OR REPLACE FUNCTION billing_iso(value timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT replace(to_char(value AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z')
$$;
