-- The account's quotas for a spend of p_credits at p_now (the application's clock), decided on
-- the locked account: the credits spent in the current UTC day (at most p_daily_cap) and a token
-- bucket (p_per_minute tokens a minute, at most p_burst; a spend takes one). 0 switches either
-- off; the account's own daily_cap_credits, rate_limit_per_minute and rate_limit_burst, when set,
-- win over the parameters (the settings). The one quota rule for debits, holds and batch items.
-- Outcome 'made', and acct counting the spend (the caller writes its rate_* and day_* columns
-- with the balances); else 'daily_cap_reached' (reported first: it lasts longer) or
-- 'rate_limited', acct unchanged, and retry_after the seconds until the spend could be made
-- (NULL for a spend larger than the whole daily cap: it never can).
-- rate_limit, rate_remaining and rate_reset (the bucket's size, whole tokens left, seconds until
-- it is full again) feed the RateLimit-* headers; NULL while the rate limit is off.
CREATE OR REPLACE FUNCTION billing_spend_quota(
    p_account accounts_account, p_credits bigint, p_now timestamptz,
    p_per_minute integer, p_burst integer, p_daily_cap bigint,
    OUT outcome text, OUT acct accounts_account, OUT retry_after integer,
    OUT rate_limit integer, OUT rate_remaining integer, OUT rate_reset integer
)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    per_minute integer := coalesce(p_account.rate_limit_per_minute, p_per_minute);
    burst integer := greatest(coalesce(p_account.rate_limit_burst, p_burst), 1);
    cap bigint := coalesce(p_account.daily_cap_credits, p_daily_cap);
    today date := (p_now AT TIME ZONE 'UTC')::date;
    spent bigint := CASE WHEN p_account.day_started = today THEN p_account.day_spent ELSE 0 END;
    tokens double precision;
BEGIN
    acct := p_account;
    IF per_minute > 0 THEN
        -- Refilled for the time since the last spend (none when the clock reads earlier).
        tokens := least(burst, coalesce(acct.rate_tokens, burst)
                               + greatest(extract(epoch FROM p_now - acct.rate_checked_at), 0) * per_minute / 60.0);
        rate_limit := burst;
    END IF;
    IF cap > 0 AND spent + p_credits > cap THEN
        outcome := 'daily_cap_reached';
        IF p_credits <= cap THEN
            retry_after := ceil(extract(epoch FROM ((today + 1)::timestamp AT TIME ZONE 'UTC') - p_now));
        END IF;
    ELSIF tokens < 1 - 1e-9 THEN  -- a hair under one token is one: refills add up in floating point
        outcome := 'rate_limited';
        retry_after := ceil((1 - tokens) * 60 / per_minute);
    ELSE
        outcome := 'made';
        acct.day_started := today;
        acct.day_spent := spent + p_credits;
        IF per_minute > 0 THEN
            tokens := tokens - 1;
            acct.rate_tokens := tokens;
            acct.rate_checked_at := greatest(p_now, acct.rate_checked_at);
        END IF;
    END IF;
    IF per_minute > 0 THEN
        rate_remaining := floor(tokens + 1e-9);
        rate_reset := greatest(ceil((burst - tokens) * 60 / per_minute - 1e-9), 0);
    END IF;
END
$$;
