-- What each version changed, so a sidecar can patch its snapshot instead of reloading it all:
-- 'policy' (anything: reload), 'jti' (a revoked JWT id), 'user' (a user's revoke-all, by id),
-- 'token' (an API token issued or revoked, by token id). A version missing here (a change
-- written by hand) makes sidecars reload everything.
CREATE TABLE policy_changes (
    version BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT ''
);
