-- The minimal debit, as bench/urls.py's bare endpoint runs it: one conditional UPDATE and one
-- INSERT in a transaction. pgbench sets :accounts (-D) and :hot (-D, 0 = random accounts).
\set aid random(1, :accounts)
\if :hot > 0
\set aid :hot
\endif
BEGIN;
UPDATE bench_balance SET available = available - 1 WHERE id = :aid AND available >= 1;
INSERT INTO bench_spend (account_id, credits, created_at) VALUES (:aid, 1, now());
END;
