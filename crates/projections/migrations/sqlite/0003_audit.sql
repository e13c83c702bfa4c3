-- The audit index: where each event is in the log, by the fields auditors filter on. The
-- events themselves are always read back from the log.
CREATE TABLE IF NOT EXISTS audit_index (
    sequence    INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_customer ON audit_index (customer_id, sequence);
CREATE INDEX IF NOT EXISTS audit_type ON audit_index (event_type, sequence);
CREATE INDEX IF NOT EXISTS audit_actor ON audit_index (actor, sequence);
CREATE INDEX IF NOT EXISTS audit_occurred ON audit_index (occurred_at);
CREATE INDEX IF NOT EXISTS audit_recorded ON audit_index (recorded_at);

-- Signed checkpoints of every customer's chain head, so a stream rebuilt from scratch with
-- consistent but different hashes is detected.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    head_sequence INTEGER PRIMARY KEY,
    created_at    TEXT NOT NULL,
    customers     INTEGER NOT NULL,
    heads_digest  TEXT NOT NULL,
    signature     TEXT NOT NULL
);

-- Every customer's chain head as the audit projection last saw it.
CREATE TABLE IF NOT EXISTS chain_heads (
    customer_id TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    sequence    INTEGER NOT NULL
);
