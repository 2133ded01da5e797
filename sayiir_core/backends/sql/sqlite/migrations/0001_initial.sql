-- 0001: the initial Sayiir schema.
--
-- Applied by SqliteBackend.open() inside one BEGIN IMMEDIATE transaction, statement by
-- statement, and recorded in sayiir_migrations. Never edit a released migration: add
-- 0002_<name>.sql and update schema.sql to match (tests/migration checks they agree).

CREATE TABLE sayiir_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- seq orders list_instances (newest first) and is its cursor; AUTOINCREMENT so a row
-- replaced by terminate_existing sorts as new and a cursor never meets a reused value.
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

-- claim_next filters on status and workflow_id; list_instances on either. commit only
-- sets status when it changes, so the status index costs ordinary steps nothing.
CREATE INDEX sayiir_instances_status ON sayiir_instances (status, workflow_id);
CREATE INDEX sayiir_instances_workflow ON sayiir_instances (workflow_id);

-- seq is the write order (load and reset_from rely on it). A plain rowid is enough: a
-- new rowid is always above every row still present, and it spares the hot path the
-- sqlite_sequence update AUTOINCREMENT would cost.
CREATE TABLE sayiir_checkpoints (
    seq         INTEGER PRIMARY KEY,
    instance_id TEXT NOT NULL,
    step_key    TEXT NOT NULL,
    payload     BLOB NOT NULL,
    UNIQUE (instance_id, step_key)
);

-- AUTOINCREMENT: commit deletes a consumed signal by id, so ids must never be reused.
CREATE TABLE sayiir_signals (
    signal_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     BLOB NOT NULL,
    sent_at     REAL NOT NULL
);

CREATE INDEX sayiir_signals_by_name ON sayiir_signals (instance_id, name);

-- Append-only; seq counts from 1 per instance and survives terminate_existing.
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
