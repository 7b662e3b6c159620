//! What sign-in needs from storage: users linked to provider accounts, sessions, refresh-token
//! families, one-time handoff codes. Only digests of refresh tokens and codes are stored.
//! Revoking a session bumps the policy version with the session id as a revoked JWT id, so
//! every sidecar refuses the session's tokens through the usual reload.

use crate::identity::TokenDigest;

use super::{StoreError, UserRecord};

/// A provider account as the ID token names it (after the account rules passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLink<'a> {
    /// The provider's issuer.
    pub provider: &'a str,
    /// The provider's `sub`.
    pub subject: &'a str,
    /// The verified email, lower-cased.
    pub email: &'a str,
    pub name: Option<&'a str>,
}

/// Why a provider account could not be matched to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// Found by its link, linked now to the user with its email, or created.
    User { user: UserRecord, created: bool },
    /// A user has this email but is linked to another account at the same provider.
    EmailLinkedElsewhere,
    /// The account is linked, but the email the provider now gives it belongs to another user.
    EmailTakenByAnother,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub user_id: i64,
    pub email: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

impl SessionInfo {
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current: it is used up and the new one replaces it.
    Rotated { session_id: String },
    /// The token had already been used: the whole session is revoked now.
    Reused { session_id: String },
    /// Not a token of any session, or its session is revoked or expired.
    Refused,
}

#[async_trait::async_trait]
pub trait LoginStore: Send + Sync + 'static {
    /// The user linked to the account; else the user with its email, linked now (when no
    /// other account of the provider is linked to it); else a new user with `default_roles`
    /// (those that exist). A new link or user bumps the version so sidecars load the user.
    async fn link_account(
        &self,
        account: &AccountLink<'_>,
        default_roles: &[String],
        now: i64,
    ) -> Result<LinkOutcome, StoreError>;
    async fn login_user(&self, id: i64) -> Result<Option<UserRecord>, StoreError>;
    /// A new session, with its first refresh token when it has one.
    async fn create_session(
        &self,
        id: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
        refresh: Option<&TokenDigest>,
    ) -> Result<(), StoreError>;
    /// Starts a session's refresh family (after a handoff-code exchange).
    async fn add_refresh(
        &self,
        session_id: &str,
        refresh: &TokenDigest,
        now: i64,
    ) -> Result<(), StoreError>;
    async fn session(&self, id: &str) -> Result<Option<SessionInfo>, StoreError>;
    /// Uses a refresh token up and stores `next` in its place (see `RefreshOutcome`).
    async fn rotate_refresh(
        &self,
        presented: &TokenDigest,
        next: &TokenDigest,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError>;
    async fn insert_handoff(
        &self,
        code: &TokenDigest,
        session_id: &str,
        origin: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// Uses a handoff code up: its session and origin, once, before it expires.
    async fn take_handoff(
        &self,
        code: &TokenDigest,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError>;
    /// Revokes a session (idempotent; `false` when there is no such session).
    async fn revoke_session(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError>;
    /// Revokes every live session of a user; how many.
    async fn revoke_user_sessions(&self, email: &str, now: i64) -> Result<usize, StoreError>;
    async fn list_sessions(&self, email: Option<&str>) -> Result<Vec<SessionInfo>, StoreError>;
}
