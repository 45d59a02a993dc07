-- The price in credits of an active operation; NULL for an unknown or inactive one. PL/pgSQL,
-- so that its query is planned once per session (a SQL function reading a table is not inlined).
CREATE OR REPLACE FUNCTION billing_operation_price(p_code varchar) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT o.credits FROM billing_operation o WHERE o.code = p_code AND o.active);
END
$$;
