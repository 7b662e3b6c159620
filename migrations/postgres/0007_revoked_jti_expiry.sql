-- A revoked JWT id is kept only while the token it names could still be accepted: its `exp`
-- (NULL: unknown, kept for ever). Sidecars load only the live ones; revoking prunes the rest.
ALTER TABLE revoked_jtis ADD COLUMN expires_at BIGINT;
