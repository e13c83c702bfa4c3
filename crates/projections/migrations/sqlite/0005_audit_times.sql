-- The audit index keeps business and recording time as integer microseconds since the Unix
-- epoch (UTC), so time ranges compare exactly and use an index, instead of converting
-- every row's RFC 3339 text with julianday(). The index is a projection of the log: drop
-- it and reset its checkpoint, and the audit projector rebuilds it from the first event.
DROP TABLE IF EXISTS audit_index;
DELETE FROM chain_heads;
DELETE FROM projection_checkpoints WHERE name = 'audit';

CREATE TABLE audit_index (
    sequence    INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    actor       TEXT NOT NULL,
    occurred_us INTEGER NOT NULL,
    recorded_us INTEGER NOT NULL
);
CREATE INDEX audit_customer ON audit_index (customer_id, sequence);
CREATE INDEX audit_type ON audit_index (event_type, sequence);
CREATE INDEX audit_type_occurred ON audit_index (event_type, occurred_us);
CREATE INDEX audit_actor ON audit_index (actor, sequence);
CREATE INDEX audit_occurred ON audit_index (occurred_us);
CREATE INDEX audit_recorded ON audit_index (recorded_us);
