-- Credits going back to the lot p_grant (its source p_source, expiring at p_expires_at, voided
-- when p_voided) of a locked account, after the caller's entry that gave them back to the
-- balance (a hold's `release`, a debit's `refund`): what goes back to a lot that has lapsed
-- expires at once (an `expire` entry), and to a lot an operator voided is voided at once (a
-- `void` entry); on the lot of a purchase that owes credits (its unrecoverable_credits: a refund or
-- dispute found them spent or held), they pay that first (a `clawback` entry, counted on the
-- purchase as clawed back and no longer unrecoverable); the rest goes back on the lot.
-- balance: the account's available credits, before and after; p_on_hold its held credits.
CREATE OR REPLACE FUNCTION billing_give_back(
    p_account bigint, p_grant bigint, p_source varchar, p_expires_at timestamptz, p_voided boolean,
    p_credits bigint, p_on_hold bigint, p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    p_reference varchar, INOUT balance bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    gone varchar := CASE WHEN billing_expired(p_expires_at, p_now) THEN 'expire' WHEN p_voided THEN 'void' END;
    owing billing_purchase;
    paid bigint := 0;
BEGIN
    IF gone IS NOT NULL THEN
        balance := balance - p_credits;
        PERFORM billing_entry(p_account, gone, -p_credits, 0, balance, p_on_hold, p_grant, NULL, NULL,
                              p_actor_type, p_actor_id, p_reference, p_now);
        RETURN;
    END IF;
    IF p_source = 'purchase' THEN
        SELECT * INTO owing FROM billing_purchase WHERE grant_id = p_grant AND unrecoverable_credits > 0 FOR UPDATE;
        IF FOUND THEN
            paid := least(owing.unrecoverable_credits, p_credits);
            UPDATE billing_purchase
            SET unrecoverable_credits = unrecoverable_credits - paid, clawed_back_credits = clawed_back_credits + paid,
                updated_at = p_now
            WHERE id = owing.id;
            balance := balance - paid;
            PERFORM billing_entry(p_account, 'clawback', -paid, 0, balance, p_on_hold, p_grant, NULL, NULL,
                                  p_actor_type, p_actor_id, owing.public_id, p_now);
        END IF;
    END IF;
    IF p_credits > paid THEN
        UPDATE billing_grant SET remaining = remaining + (p_credits - paid) WHERE id = p_grant;
    END IF;
END
$$;
