-- The scoring policy each projection's rows were folded under: a digest of the whole
-- policy, its version label for messages, and the policy as JSON (a later build compares
-- the rules, so a policy field it added does not count as another policy). A live
-- projector whose policy differs stops instead of folding new events under its own policy
-- on top of rows folded under another: after a rebuild under a new policy, or a restart
-- with an edited policy file.
CREATE TABLE projection_policies (
    name           TEXT COLLATE "C" PRIMARY KEY,
    policy_digest  TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    policy         TEXT NOT NULL
);
