-- The rate a projector applied events at over its last ten seconds of commits, written
-- with each checkpoint so every process (gateway, `crm status`) can report it.
ALTER TABLE projection_checkpoints ADD COLUMN apply_rate REAL NOT NULL DEFAULT 0;
