-- 0001: the initial Sayiir schema for PostgreSQL.
--
-- Applied by PostgresBackend.open() in one transaction, under an advisory lock so that
-- workers opening a new database at once migrate it once, with search_path set to the
-- configured schema (names here are unqualified on purpose), and recorded in
-- sayiir_migrations. Never edit a released migration: add 0002_<name>.sql and update
-- schema.sql to match (tests/migration/test_postgres_schema.py checks they agree).

CREATE TABLE sayiir_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at double precision NOT NULL
);

-- control/error (and history detail) are json, not jsonb: json keeps the text exactly
-- as written, including \u0000 escapes that jsonb refuses (they occur in exception
-- messages), and costs no parse on every commit; nothing queries inside them.
-- seq orders list_instances (newest first) and is its cursor; terminate_existing
-- deletes and re-inserts, so a replaced instance gets a new seq and lists as new.
-- history_seq is the last history seq of the instance: a writer bumps it in the same
-- UPDATE that holds the row lock, so concurrent writers never pick the same event seq.
-- last_commit is a random id written by each commit, so a commit whose connection
-- dropped can tell whether it was applied. fillfactor leaves room on each page for HOT
-- updates: most commits change no indexed column.
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

-- claim_next walks this in claim order and stops at its LIMIT. Only rows that are or
-- will become claimable by time alone are in it: not finished instances (usually the
-- bulk of the table), nor paused ones, nor ones waiting for a signal without deadline.
CREATE INDEX sayiir_instances_claimable
    ON sayiir_instances (priority, (COALESCE(wake_at, 0)), created_at, seq)
    WHERE control_request IS NOT NULL
       OR status IN ('pending', 'running')
       OR (status IN ('waiting', 'awaiting_signal') AND wake_at IS NOT NULL);

-- Written once per step; seq is the write order (load and reset_from rely on it).
CREATE TABLE sayiir_checkpoints (
    instance_id text NOT NULL,
    step_key    text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    payload     bytea NOT NULL,
    PRIMARY KEY (instance_id, step_key)
);

-- Buffered signals, FIFO per (instance_id, name) by signal_id; ids are never reused
-- because commit deletes a consumed signal by id.
CREATE TABLE sayiir_signals (
    signal_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id text NOT NULL,
    name        text NOT NULL,
    payload     bytea NOT NULL,
    sent_at     double precision NOT NULL
);

CREATE INDEX sayiir_signals_by_name ON sayiir_signals (instance_id, name, signal_id);

-- Append-only; seq counts from 1 per instance and survives terminate_existing.
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
EXCEPTION WHEN feature_not_supported THEN
    NULL;
END
$$;
