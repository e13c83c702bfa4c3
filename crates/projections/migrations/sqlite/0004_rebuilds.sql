-- Blue-green rebuilds in progress or done, with progress for the status API.
CREATE TABLE IF NOT EXISTS projection_rebuilds (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    done       INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error      TEXT
);
