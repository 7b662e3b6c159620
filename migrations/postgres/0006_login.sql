-- Sign-in (issue 10). A user is linked to a provider account by (issuer, subject), never by
-- email alone. A session is one sign-in: its refresh tokens are one family, its id is the
-- `sid` of every token minted for it, and revoking it also lists that id in revoked_jtis, so
-- sidecars refuse its tokens through the same change log as a revoked jti.
CREATE TABLE user_identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);
-- Only the SHA-256 digest (hex) of a refresh token or handoff code is stored.
CREATE TABLE refresh_tokens (
    digest TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);
CREATE TABLE handoff_codes (
    digest TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    origin TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
