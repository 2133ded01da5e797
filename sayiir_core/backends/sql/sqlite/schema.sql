-- The current Sayiir schema for SQLite, in one place for reading and review.
--
-- SqliteBackend builds a database by applying migrations/*.sql in order; this file is
-- what they add up to, and tests/migration/test_sqlite_schema.py fails when the two
-- drift. Times are REAL seconds since the epoch, payloads BLOBs written by the codec,
-- control/error/history detail JSON text.

-- Applied migrations, one row per migrations/NNNN_name.sql file.
CREATE TABLE sayiir_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- One row per workflow instance. seq orders list_instances (newest first) and is its
-- cursor; AUTOINCREMENT so a row replaced by terminate_existing sorts as new and a
-- cursor never meets a reused value. owner/claim_token/lease_until are the claim:
-- commit only writes when its token equals claim_token (fencing).
CREATE TABLE sayiir_instances (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id     TEXT NOT NULL UNIQUE,
    workflow_id     TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    status          TEXT NOT NULL,
    input           BLOB NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    output          BLOB,
    error           TEXT,
    control         TEXT NOT NULL DEFAULT '{}',
    wake_at         REAL,
    reason          TEXT,
    cancelled_by    TEXT,
    paused_by       TEXT,
    control_request TEXT,
    owner           TEXT,
    claim_token     INTEGER NOT NULL DEFAULT 0,
    lease_until     REAL,
    priority        INTEGER NOT NULL DEFAULT 3
);

CREATE INDEX sayiir_instances_status ON sayiir_instances (status, workflow_id);
CREATE INDEX sayiir_instances_workflow ON sayiir_instances (workflow_id);

-- Step outputs, written once each. seq is the write order (load and reset_from rely on
-- it); a plain rowid suffices because a new rowid is above every row still present.
CREATE TABLE sayiir_checkpoints (
    seq         INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    step_key    TEXT NOT NULL,
    payload     BLOB NOT NULL,
    UNIQUE (instance_id, step_key)
);

-- Buffered signals, FIFO per (instance_id, name) by signal_id; never reused.
CREATE TABLE sayiir_signals (
    signal_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     BLOB NOT NULL,
    sent_at     REAL NOT NULL
);

CREATE INDEX sayiir_signals_by_name ON sayiir_signals (instance_id, name);

-- Append-only history; seq counts from 1 per instance and survives terminate_existing.
-- WITHOUT ROWID: rows live in the primary-key b-tree, so an event costs one b-tree
-- write per commit instead of a table plus an index.
CREATE TABLE sayiir_history (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    at          REAL NOT NULL,
    step_key    TEXT,
    attempt     INTEGER,
    worker_id   TEXT,
    detail      TEXT,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
