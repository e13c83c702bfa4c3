-- Checkpoints: the last stream sequence each projection applied, written in the same
-- transaction as the projection's rows.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name          TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    updated_at    TEXT NOT NULL
);

-- One row per customer: the current stage and the folded lifecycle facts (JSON).
CREATE TABLE IF NOT EXISTS lifecycle_customers (
    customer_id   TEXT PRIMARY KEY,
    stage         TEXT NOT NULL,
    since         TEXT NOT NULL,
    version       INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    won_back      INTEGER NOT NULL,
    state         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lifecycle_customers_stage ON lifecycle_customers (stage);

-- Every stage change, in order per customer.
CREATE TABLE IF NOT EXISTS lifecycle_transitions (
    customer_id TEXT NOT NULL,
    version     INTEGER NOT NULL,
    from_stage  TEXT,
    to_stage    TEXT NOT NULL,
    at          TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    PRIMARY KEY (customer_id, version)
);
