-- User ids come from an identity sequence and are never reused. Deleted users leave a
-- tombstone, so their tokens are refused in every mode.
CREATE TABLE deleted_users (
    id BIGINT PRIMARY KEY,
    email TEXT NOT NULL,
    deleted_at BIGINT NOT NULL
);
