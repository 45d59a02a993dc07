-- The debit row a batch item makes (billing_debit_batch), before it is written: its id drawn from
-- billing_debit's sequence (p_ids), no operation or reference as '', no metadata as {}, as
-- billing_debit writes them.
CREATE OR REPLACE FUNCTION billing_debit_batch_row(
    p_ids regclass, p_public_id varchar, p_account bigint, p_credits bigint, p_operation varchar,
    p_reference varchar, p_metadata jsonb, p_actor_type varchar, p_actor_id varchar, p_now timestamptz
) RETURNS billing_debit
LANGUAGE plpgsql AS $$
DECLARE
    made billing_debit;
BEGIN
    made.id := nextval(p_ids);
    made.public_id := p_public_id;
    made.account_id := p_account;
    made.credits := p_credits;
    made.operation := coalesce(p_operation, '');
    made.reference := coalesce(p_reference, '');
    made.metadata := coalesce(p_metadata, '{}'::jsonb);
    made.actor_type := p_actor_type;
    made.actor_id := p_actor_id;
    made.created_at := p_now;
    RETURN made;
END
$$;
