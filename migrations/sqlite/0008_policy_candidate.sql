-- A candidate policy stored beside the live one (`policy apply --shadow`): the policy file as
-- applied (YAML) and whether it prunes. Every sidecar evaluates the live policy merged with it
-- beside the live one and enforces only the live one; `policy promote` writes it over the live
-- policy and `policy discard` drops it, each in one transaction. At most one row.
CREATE TABLE policy_candidate (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL,
    prune INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
