-- Expire every lapsed lot with credits left of the locked accounts p_accounts: each lot's rest
-- goes (an `expire` entry each, in lot order), and each account's cached balance drops by what
-- its lots lost. Set-based, so the hourly expiry job runs it for a whole chunk of accounts at
-- once, and billing_settle for one. Entry k of an account gets balance_after = (the balance
-- after all of them) + (what the entries after k took), the running balance in lot order.
-- Returns how many lots expired and how many credits.
CREATE OR REPLACE FUNCTION billing_expire_lots(
    p_accounts bigint[], p_now timestamptz, p_actor_type varchar, p_actor_id varchar,
    OUT lots bigint, OUT credits bigint
)
LANGUAGE sql AS $$
WITH lapsed AS (
    SELECT g.id, g.account_id, g.remaining FROM billing_grant g
    WHERE g.account_id = ANY(p_accounts) AND g.spendable AND billing_expired(g.expires_at, p_now)
),
zeroed AS (
    UPDATE billing_grant g SET remaining = 0
    FROM lapsed l WHERE g.id = l.id
    RETURNING g.id, g.account_id, l.remaining AS credits
),
totals AS (SELECT z.account_id, sum(z.credits) AS total FROM zeroed z GROUP BY z.account_id),
moved AS (
    UPDATE accounts_account a SET available_credits = a.available_credits - t.total
    FROM totals t WHERE a.id = t.account_id
    RETURNING a.id AS account_id, a.available_credits AS after, a.held_credits
),
entries AS (
    INSERT INTO billing_ledgerentry
        (account_id, kind, credits, held_credits, balance_after, held_after, grant_id,
         actor_type, actor_id, reference, created_at)
    SELECT z.account_id, 'expire', -z.credits, 0,
           m.after + coalesce(sum(z.credits) OVER later, 0), m.held_credits, z.id,
           p_actor_type, p_actor_id, '', p_now
    FROM zeroed z JOIN moved m ON m.account_id = z.account_id
    WINDOW later AS (PARTITION BY z.account_id ORDER BY z.id ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
    ORDER BY z.account_id, z.id
    RETURNING credits
)
SELECT count(*), coalesce(-sum(e.credits), 0)::bigint FROM entries e
$$;
