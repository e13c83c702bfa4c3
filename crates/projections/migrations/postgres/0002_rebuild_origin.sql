-- What the shadow copy of a rebuild was begun under: its projections, the code's version
-- and the policy they priced and scored with. A rebuild resumes a half-built shadow only
-- if it matches; otherwise it starts the shadow again. (Only shadows hold a row.)
CREATE TABLE rebuild_origin (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT COLLATE "C" NOT NULL
);
