-- User ids are never given to another user: a JWT's `sub` names one person forever.
-- SQLite reuses the largest INTEGER PRIMARY KEY after a delete unless the column is
-- AUTOINCREMENT, which needs the table rebuilt. sqlx runs this file in a transaction, where
-- foreign keys cannot be switched off, so dropping the old table cascades: the rows that point
-- at users are kept aside and put back, keeping their ids.
CREATE TEMP TABLE kept_user_roles AS SELECT * FROM user_roles;
CREATE TEMP TABLE kept_api_tokens AS SELECT * FROM api_tokens WHERE user_id IS NOT NULL;
CREATE TABLE users_rebuilt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL DEFAULT (unixepoch()),
    tokens_valid_after INTEGER
);
INSERT INTO users_rebuilt (id, email, name, disabled, created_at, tokens_valid_after)
    SELECT id, email, name, disabled, created_at, tokens_valid_after FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
INSERT INTO user_roles SELECT * FROM kept_user_roles;
INSERT INTO api_tokens SELECT * FROM kept_api_tokens;
DROP TABLE kept_user_roles;
DROP TABLE kept_api_tokens;
-- Deleted users leave a tombstone, so their tokens are refused in every mode.
CREATE TABLE deleted_users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL,
    deleted_at INTEGER NOT NULL
);
