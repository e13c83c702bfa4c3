-- Partitioned projectors: the fence (lease revision) of the last commit per group and
-- partition. A commit carrying a smaller fence than the one recorded comes from a process
-- that lost its lease, and is refused. Per-partition checkpoints live in
-- projection_checkpoints as `<projection>@<pp>`.
CREATE TABLE IF NOT EXISTS projection_fences (
    grp       TEXT NOT NULL,
    partition INTEGER NOT NULL,
    fence     INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
);
