-- The public id of a row that stores none (grt_ for grants): p_prefix and the row id put through
-- the keyed permutation of accounts/ids.py (row_public_id, its Python twin; p_keys are the four
-- round keys of the prefix, accounts.ids.row_id_keys(p_prefix)), in 11 characters of its alphabet
-- (a-z, A-Z, 0-9).
-- Ids from 2**62 up are NULL.
CREATE OR REPLACE FUNCTION billing_public_id(p_prefix text, p_id bigint, p_keys bigint[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    alphabet CONSTANT text := 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    l bigint := p_id >> 31;
    r bigint := p_id & 2147483647;
    t bigint;
    body text := '';
BEGIN
    IF p_id < 0 OR p_id >= 4611686018427387904 THEN
        RETURN NULL;
    END IF;
    FOR i IN 1..4 LOOP
        t := r;
        r := l # ((((r # p_keys[i]) * 625341585) & 2147483647) # (r >> 11));
        l := t;
    END LOOP;
    t := (l << 31) | r;
    FOR i IN 1..11 LOOP
        body := substr(alphabet, (t % 62)::int + 1, 1) || body;
        t := t / 62;
    END LOOP;
    RETURN p_prefix || body;
END
$$;
