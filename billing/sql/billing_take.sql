-- Take p_credits from a locked, settled account's lots in spend order (billing_spendable_lots),
-- one entry of p_kind ('debit', or 'hold', which moves them to held credits) per lot. The
-- caller has checked the account has them; a shortfall is a bug and rolls everything back.
CREATE OR REPLACE FUNCTION billing_take(
    p_account bigint, p_credits bigint, p_kind varchar, p_hold bigint, p_debit bigint, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar, p_reference varchar, INOUT balance bigint, INOUT on_hold bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    lot record;
    part bigint;
    still bigint := p_credits;
BEGIN
    FOR lot IN SELECT l.id, l.remaining FROM billing_spendable_lots(p_account, p_now) l ORDER BY l.place LOOP
        part := least(lot.remaining, still);
        UPDATE billing_grant SET remaining = remaining - part WHERE id = lot.id;
        balance := balance - part;
        IF p_kind = 'hold' THEN
            on_hold := on_hold + part;
        END IF;
        PERFORM billing_entry(p_account, p_kind, -part, CASE WHEN p_kind = 'hold' THEN part ELSE 0 END, balance,
                              on_hold, lot.id, p_hold, p_debit, p_actor_type, p_actor_id, p_reference, p_now);
        still := still - part;
        EXIT WHEN still = 0;
    END LOOP;
    IF still > 0 THEN
        RAISE EXCEPTION 'billing_take: account % is % credits short of its cached balance', p_account, still;
    END IF;
END
$$;
