-- A lot's default priority by source: lower is spent first among lots with the same expiry.
CREATE OR REPLACE FUNCTION billing_priority(p_source varchar) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_source WHEN 'free_monthly' THEN 10 WHEN 'promo' THEN 20 WHEN 'purchase' THEN 50
                         WHEN 'adjustment' THEN 60 ELSE 100 END
$$;
