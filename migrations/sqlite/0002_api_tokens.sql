-- Service accounts (non-human identities) and API tokens. A token row keeps only the SHA-256
-- digest of the secret (hex), never the token itself.
CREATE TABLE service_accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT (unixepoch())
);
CREATE TABLE service_account_roles (
    service_account_id INTEGER NOT NULL REFERENCES service_accounts(id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (service_account_id, role_id)
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    service_account_id INTEGER REFERENCES service_accounts(id) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '',
    -- comma-separated permission names the token is limited to; NULL: all of its owner's
    permissions TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    last_used_at INTEGER,
    CHECK ((user_id IS NULL) <> (service_account_id IS NULL))
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
CREATE INDEX api_tokens_service_account ON api_tokens (service_account_id);
