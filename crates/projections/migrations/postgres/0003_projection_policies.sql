-- The scoring policy each projection's rows were folded under (a digest of the whole
-- policy, and its version label for messages). A live projector whose policy differs
-- stops instead of folding new events under its own policy on top of rows folded under
-- another: after a rebuild under a new policy, or a restart with an edited policy file.
CREATE TABLE projection_policies (
    name           TEXT COLLATE "C" PRIMARY KEY,
    policy_digest  TEXT NOT NULL,
    policy_version TEXT NOT NULL
);
