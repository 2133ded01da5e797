-- The current Sayiir schema for PostgreSQL, in one place for reading and review.
--
-- PostgresBackend builds a schema by applying migrations/*.sql in order (with
-- search_path set to the configured schema, "sayiir" by default); this file is what
-- they add up to, and tests/migration/test_postgres_schema.py fails when the two drift.
-- Times are double precision seconds since the epoch, payloads bytea written by the
-- codec, control/error/history detail json (not jsonb: json keeps the text exactly as
-- written, including \u0000 escapes that jsonb refuses, e.g. in an exception message,
-- and skips jsonb's parse on every commit; nothing queries inside these columns).

-- Applied migrations, one row per migrations/NNNN_name.sql file.
CREATE TABLE sayiir_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at double precision NOT NULL
);

-- One row per workflow instance. owner/claim_token/lease_until are the claim: commit
-- only writes when its token equals claim_token (fencing). seq orders list_instances
-- and is its cursor. history_seq is the instance's last history seq; last_commit the
-- random id of its last commit (lets a commit whose connection dropped find out
-- whether it was applied).
CREATE TABLE sayiir_instances (
    instance_id     text PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    workflow_id     text NOT NULL,
    definition_hash text NOT NULL,
    status          text NOT NULL,
    input           bytea NOT NULL,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    output          bytea,
    error           json,
    control         json NOT NULL DEFAULT '{}',
    wake_at         double precision,
    reason          text,
    cancelled_by    text,
    paused_by       text,
    control_request text,
    owner           text,
    claim_token     bigint NOT NULL DEFAULT 0,
    lease_until     double precision,
    priority        integer NOT NULL DEFAULT 3,
    history_seq     integer NOT NULL DEFAULT 0,
    last_commit     bigint,
    CONSTRAINT sayiir_instances_status_check CHECK (status IN (
        'pending', 'running', 'waiting', 'awaiting_signal', 'paused',
        'completed', 'failed', 'cancelled'
    )),
    CONSTRAINT sayiir_instances_control_request_check
        CHECK (control_request IN ('cancel', 'pause'))
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX sayiir_instances_seq ON sayiir_instances (seq);
CREATE INDEX sayiir_instances_status ON sayiir_instances (status, seq);
CREATE INDEX sayiir_instances_workflow ON sayiir_instances (workflow_id, seq);
-- Partial, in claim_next order: only rows that are or will become claimable by time
-- alone (not finished, paused, or waiting for a signal without a deadline).
CREATE INDEX sayiir_instances_claimable
    ON sayiir_instances (priority, (COALESCE(wake_at, 0)), created_at, seq)
    WHERE control_request IS NOT NULL
       OR status IN ('pending', 'running')
       OR (status IN ('waiting', 'awaiting_signal') AND wake_at IS NOT NULL);

-- Step outputs, written once each; seq is the write order.
CREATE TABLE sayiir_checkpoints (
    instance_id text NOT NULL,
    step_key    text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    payload     bytea NOT NULL,
    PRIMARY KEY (instance_id, step_key)
);

-- Buffered signals, FIFO per (instance_id, name) by signal_id; never reused.
CREATE TABLE sayiir_signals (
    signal_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id text NOT NULL,
    name        text NOT NULL,
    payload     bytea NOT NULL,
    sent_at     double precision NOT NULL
);

CREATE INDEX sayiir_signals_by_name ON sayiir_signals (instance_id, name, signal_id);

-- Append-only history; seq counts from 1 per instance and survives terminate_existing.
CREATE TABLE sayiir_history (
    instance_id text NOT NULL,
    seq         integer NOT NULL,
    kind        text NOT NULL,
    at          double precision NOT NULL,
    step_key    text,
    attempt     integer,
    worker_id   text,
    detail      json,
    PRIMARY KEY (instance_id, seq)
);

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

-- Payloads over ~2 KB are TOASTed (compressed, moved out of line). lz4 does that several
-- times faster than the default pglz (benchmarks/pg_payload_format.py: a 100 KB JSON
-- checkpoint inserted in about 1 ms instead of 2.6 ms); a server without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE sayiir_instances
        ALTER COLUMN input SET COMPRESSION lz4,
        ALTER COLUMN output SET COMPRESSION lz4;
    ALTER TABLE sayiir_checkpoints ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE sayiir_signals ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE sayiir_steps
        ALTER COLUMN input SET COMPRESSION lz4,
        ALTER COLUMN output SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;
