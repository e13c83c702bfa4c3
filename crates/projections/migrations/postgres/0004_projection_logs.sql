-- The event log each projection's rows were built from, by the id of the log's first
-- event. A projector on another log (a stream made again, another server, `crm dev
-- --nats-url` over a data dir built from the embedded log) stops instead of following
-- that log from a checkpoint that counts another log's events: only a checkpoint past the
-- head gave that away before.
CREATE TABLE projection_logs (
    name           TEXT COLLATE "C" PRIMARY KEY,
    first_event_id TEXT NOT NULL
);
