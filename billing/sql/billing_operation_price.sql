-- The price in credits of an active operation; NULL for an unknown or inactive one.
CREATE OR REPLACE FUNCTION billing_operation_price(p_code varchar) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT o.credits FROM billing_operation o WHERE o.code = p_code AND o.active
$$;
