-- Take back up to p_credits (all when NULL) of what is still unspent on the lot p_grant: a
-- `clawback` (a refund or dispute of a purchase, or an operator's) or a `void` (an operator
-- cancels a grant), as p_kind says. Locks and settles the account first, so a lot that lapsed is
-- expired, not taken back; credits spent or held are not there to take. A voided lot stays
-- voided (voided_at): credits that come back to it later are voided too (billing_give_back).
-- A purchase's lot is taken back only by a clawback, counted on the purchase: clawed back, and
-- first paying what the purchase owes (unrecoverable_credits), so that its refunds and disputes
-- take back only the rest. taken: how many were taken.
-- Outcomes: made; not_found (no such lot); purchase (a void of a purchase's lot, refused).
CREATE OR REPLACE FUNCTION billing_take_back(
    p_grant bigint, p_credits bigint, p_kind varchar, p_reference varchar, p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar, OUT outcome text, OUT taken bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    acct accounts_account;
    lot billing_grant;
BEGIN
    IF p_kind NOT IN ('clawback', 'void') THEN
        RAISE EXCEPTION 'billing_take_back: % is not a kind of taking back', p_kind;
    END IF;
    acct := billing_lock((SELECT g.account_id FROM billing_grant g WHERE g.id = p_grant), p_now,
                         p_actor_type, p_actor_id);
    IF acct.id IS NULL THEN
        outcome := 'not_found';
        RETURN;
    END IF;
    SELECT * INTO lot FROM billing_grant WHERE id = p_grant;
    IF lot.source = 'purchase' AND p_kind = 'void' THEN
        outcome := 'purchase';
        RETURN;
    END IF;
    outcome := 'made';
    taken := least(coalesce(p_credits, lot.remaining), lot.remaining);
    IF p_kind = 'void' THEN
        UPDATE billing_grant SET voided_at = coalesce(voided_at, p_now) WHERE id = p_grant;
    END IF;
    IF taken > 0 THEN
        UPDATE billing_grant SET remaining = remaining - taken WHERE id = p_grant;
        UPDATE accounts_account SET available_credits = available_credits - taken WHERE id = acct.id;
        PERFORM billing_entry(acct.id, p_kind, -taken, 0, acct.available_credits - taken, acct.held_credits, p_grant,
                              NULL, NULL, p_actor_type, p_actor_id, p_reference, p_now);
        IF lot.source = 'purchase' THEN
            UPDATE billing_purchase
            SET clawed_back_credits = clawed_back_credits + taken,
                unrecoverable_credits = unrecoverable_credits - least(unrecoverable_credits, taken), updated_at = p_now
            WHERE grant_id = p_grant;
        END IF;
    END IF;
END
$$;
