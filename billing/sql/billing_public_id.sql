-- The public id of a row that stores none (grt_ for grants): p_prefix and the row id put through
-- the keyed permutation of accounts/ids.py (row_public_id, its Python twin; p_keys are the four
-- round keys of the prefix, accounts.ids.row_id_keys(p_prefix)), as 16 hex digits. Ids from
-- 2**62 up are NULL. The rounds are unrolled and the digits one to_hex() call: a PL/pgSQL
-- statement, or a character written at a time, costs more than the arithmetic.
CREATE OR REPLACE FUNCTION billing_public_id(p_prefix text, p_id bigint, p_keys bigint[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    r0 bigint := p_id & 2147483647;
    r1 bigint;
    r2 bigint;
    r3 bigint;
    r4 bigint;
BEGIN
    IF p_id < 0 OR p_id >= 4611686018427387904 THEN
        RETURN NULL;
    END IF;
    -- Each round's right half: the half before it, mixed with the round's function of the right.
    r1 := (p_id >> 31) # ((((r0 # p_keys[1]) * 625341585) & 2147483647) # (r0 >> 11));
    r2 := r0 # ((((r1 # p_keys[2]) * 625341585) & 2147483647) # (r1 >> 11));
    r3 := r1 # ((((r2 # p_keys[3]) * 625341585) & 2147483647) # (r2 >> 11));
    r4 := r2 # ((((r3 # p_keys[4]) * 625341585) & 2147483647) # (r3 >> 11));
    RETURN p_prefix || lpad(to_hex((r3 << 31) | r4), 16, '0');
END
$$;
