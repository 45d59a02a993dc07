-- Take credits from locked, settled accounts' lots in spend order (billing_spendable_lots): one
-- take per array position, each p_credits[i] from account p_accounts[i], with one entry of p_kind
-- ('debit', or 'hold', which moves them to held credits) per lot it touches, for the debit or hold
-- of that position. p_balances[i] and p_on_holds[i] are the account's available and held credits
-- just before take i: the entries' balance_after and held_after go on from them. An account may
-- have several takes (a batch): each goes on from where the one before it on that account ended,
-- all in one statement that reads the lots once, whatever the number of takes and lots. The
-- caller has checked each account has the credits; a shortfall is a bug and rolls everything back.
CREATE OR REPLACE FUNCTION billing_take(
    p_kind varchar, p_accounts bigint[], p_credits bigint[], p_holds bigint[], p_debits bigint[],
    p_references varchar[], p_balances bigint[], p_on_holds bigint[], p_now timestamptz,
    p_actor_type varchar, p_actor_id varchar
) RETURNS void
-- One plan for every call: planned for its arrays' contents, the statement would be planned
-- afresh on every call (a plan for one take looks far cheaper than the generic one), which costs
-- more than running it.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    held_share integer := CASE WHEN p_kind = 'hold' THEN 1 ELSE 0 END;
    short numeric;
BEGIN
    WITH takes AS (
        -- `upto`: the account's credits taken by this take and the ones before it in the call.
        SELECT t.*, sum(t.credits) OVER (PARTITION BY t.account ORDER BY t.n) AS upto
        FROM unnest(p_accounts, p_credits, p_holds, p_debits, p_references, p_balances, p_on_holds)
             WITH ORDINALITY AS t(account, credits, hold, debit, reference, balance, on_hold, n)
    ), parts AS (
        -- A lot gives the part of its credits that falls within the take's range; `done` is what
        -- the take has taken once this lot has given.
        SELECT t.n, t.account, t.hold, t.debit, t.reference, t.balance, t.on_hold, l.id, l.place,
               (least(l.upto, t.upto) - greatest(l.upto - l.remaining, t.upto - t.credits))::bigint AS part,
               (least(l.upto, t.upto) - (t.upto - t.credits))::bigint AS done
        FROM takes t CROSS JOIN LATERAL billing_spendable_lots(t.account, p_now) l
        WHERE l.upto > t.upto - t.credits AND l.upto - l.remaining < t.upto
    ), lots AS (
        UPDATE billing_grant g SET remaining = g.remaining - s.part
        FROM (SELECT parts.id, sum(parts.part) AS part FROM parts GROUP BY parts.id) s
        WHERE g.id = s.id
    ), entries AS (
        INSERT INTO billing_ledgerentry
            (account_id, kind, credits, held_credits, balance_after, held_after, grant_id, hold_id, debit_id,
             actor_type, actor_id, reference, created_at)
        SELECT account, p_kind, -part, held_share * part, balance - done, on_hold + held_share * done, id,
               hold, debit, p_actor_type, p_actor_id, reference, p_now
        FROM parts ORDER BY n, place
        RETURNING credits
    )
    SELECT (SELECT sum(c) FROM unnest(p_credits) c) - coalesce(-sum(credits), 0) INTO short FROM entries;
    IF short <> 0 THEN
        RAISE EXCEPTION 'billing_take: accounts % are % credits short of their cached balances', p_accounts, short;
    END IF;
END
$$;
