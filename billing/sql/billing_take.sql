-- Take p_credits from a locked, settled account's lots in spend order (billing_spendable_lots),
-- one entry of p_kind ('debit', or 'hold', which moves them to held credits) per lot touched, in
-- that order: one statement, whatever the number of lots. The caller has checked the account
-- has them; a shortfall is a bug and rolls everything back.
CREATE OR REPLACE FUNCTION billing_take(
    p_account bigint, p_credits bigint, p_kind varchar, p_hold bigint, p_debit bigint, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar, p_reference varchar, INOUT balance bigint, INOUT on_hold bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    held_share integer := CASE WHEN p_kind = 'hold' THEN 1 ELSE 0 END;
    taken bigint;
BEGIN
    WITH parts AS (
        -- Each lot gives what it has, the last one only what is still wanted.
        SELECT l.id, l.place, least(l.remaining, p_credits - (l.upto - l.remaining))::bigint AS part,
               least(l.upto, p_credits)::bigint AS upto
        FROM billing_spendable_lots(p_account, p_now) l
        WHERE l.upto - l.remaining < p_credits
    ), lots AS (
        UPDATE billing_grant g SET remaining = g.remaining - parts.part FROM parts WHERE g.id = parts.id
    ), entries AS (
        INSERT INTO billing_ledgerentry
            (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id, debit_id,
             actor_type, actor_id, reference, created_at)
        SELECT p_account, p_kind, -part, held_share * part, balance - upto, on_hold + held_share * upto, id,
               p_hold, p_debit, p_actor_type, p_actor_id, p_reference, p_now
        FROM parts ORDER BY place
        RETURNING credits
    )
    SELECT -sum(credits) INTO taken FROM entries;
    IF taken IS DISTINCT FROM p_credits THEN
        RAISE EXCEPTION 'billing_take: account % is % credits short of its cached balance',
            p_account, p_credits - coalesce(taken, 0);
    END IF;
    balance := balance - p_credits;
    on_hold := on_hold + held_share * p_credits;
END
$$;
