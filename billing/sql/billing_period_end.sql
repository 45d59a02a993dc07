-- The end of the free-credit period that starts at p_start: the same anchor day next month
-- (anchor days are 1-28, so every month has it). A free grant expires then: no rollover.
CREATE OR REPLACE FUNCTION billing_period_end(p_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((p_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
$$;
