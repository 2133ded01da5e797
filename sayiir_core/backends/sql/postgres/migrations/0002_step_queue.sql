-- The shared step queue (sayiir_core/backends/step_queue.py): steps an instance's
-- orchestrator hands to any worker. A row is queued (owner NULL), running (owner and
-- lease) or finished (finished_at set, with output or error). claim_token fences
-- finish_step; it comes from one sequence, so a row deleted and published again (the
-- instance replaced or retried) never repeats a token an old claimant still holds. A
-- row goes with the commit that checkpoints its step, with the instance's final commit
-- or cancel, or with the instance.
CREATE SEQUENCE sayiir_step_tokens;

CREATE TABLE sayiir_steps (
    instance_id     text NOT NULL
        REFERENCES sayiir_instances (instance_id) ON DELETE CASCADE,
    step_key        text NOT NULL,
    attempt         integer NOT NULL,
    workflow_id     text NOT NULL,
    definition_hash text NOT NULL,
    input           bytea NOT NULL,
    priority        integer NOT NULL,
    queued_at       double precision NOT NULL,
    owner           text,
    claim_token     bigint NOT NULL DEFAULT 0,
    lease_until     double precision,
    worker_id       text,
    started_at      double precision,
    finished_at     double precision,
    output          bytea,
    error           json,
    PRIMARY KEY (instance_id, step_key, attempt)
);

-- Unfinished steps in claim order.
CREATE INDEX sayiir_steps_claimable ON sayiir_steps (priority, queued_at)
    WHERE finished_at IS NULL;

DO $$
BEGIN
    ALTER TABLE sayiir_steps
        ALTER COLUMN input SET COMPRESSION lz4,
        ALTER COLUMN output SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;
