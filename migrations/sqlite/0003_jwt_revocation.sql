-- JWT revocation: single tokens by jti, and every token of a user issued up to a time.
ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER;
CREATE TABLE revoked_jtis (
    jti TEXT PRIMARY KEY,
    revoked_at INTEGER NOT NULL
);
