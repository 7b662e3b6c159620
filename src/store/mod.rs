//! The policy store: rows in and out, no rules. `PolicyStore` is what the rest of portcullis
//! needs from storage; `SqlStore` implements it once over sqlx's `Any` driver for the embedded
//! SQLite default and PostgreSQL (the only place with SQL), and `MemoryStore` implements it in
//! memory for tests. Merging, validating and compiling policies and checking token limits are
//! the caller's (`crate::manage`): a write takes a plan and runs it inside its transaction.

mod gc;
mod login;
mod memory;
mod sql;

use crate::identity::api_token::TokenRecord;
use crate::identity::TokenDigest;
use crate::policy::{PolicyDocument, PolicyError, Subjects, TokenState, UserState};
// A token digest as stored (hex), and back.
use crate::value::{digest_from_hex as unhex, hex};

pub use gc::{GcOutcome, GcTable, Removed};
pub use login::{AccountLink, LinkOutcome, LoginStore, RefreshOutcome, SessionInfo};
pub use memory::MemoryStore;
pub use sql::{Dialect, SqlStore, CHANGE_CHANNEL, GC_LOCK_KEY};

/// How long after a revoked token's `exp` its revocation is kept: the longest leeway a sidecar
/// may be configured with (`config::MAX_LEEWAY`; a test holds the two equal), so no sidecar
/// accepts the token when its revocation is gone.
pub const REVOCATION_GRACE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error("the store is unavailable")]
    Unavailable,
    /// The connection announcing changes was lost (the store itself may still be reachable).
    #[error("the connection listening for policy changes was lost")]
    ListenerLost,
    #[error("stored permission {permission:?} has an activity with unknown method {method:?}")]
    UnknownStoredMethod { permission: String, method: String },
    #[error("stored api token {id:?} has a malformed digest")]
    MalformedDigest { id: String },
    #[error("stored api token {id:?} does not have exactly one owner")]
    TokenWithoutOwner { id: String },
    #[error("no user {email:?}")]
    UnknownUser { email: String },
    #[error("no service account {name:?}")]
    UnknownServiceAccount { name: String },
    #[error("no api token {id:?}")]
    UnknownToken { id: String },
    #[error("the stored candidate policy cannot be read or written")]
    MalformedCandidate(#[source] PolicyError),
    /// The plan given to `update_policy` refused the change; nothing was written.
    #[error(transparent)]
    Plan(#[from] PolicyError),
}

impl StoreError {
    /// Whether the store could not be reached (no connection, the pool timed out, the server
    /// going away), as opposed to a statement it refused or data it holds.
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Connect(_) | StoreError::Unavailable => true,
            StoreError::Query(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                // Connection exceptions, insufficient resources, operator intervention
                // (the server shutting down).
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("53") || c.starts_with("57")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Who an API token is issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRef<'a> {
    User(&'a str),
    ServiceAccount(&'a str),
}

/// A token as listed: everything but the secret, which is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub owner: String,
    pub label: String,
    pub permissions: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A token row to insert: its digest only, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub digest: TokenDigest,
    pub owner: OwnerRef<'a>,
    pub label: &'a str,
    pub permissions: Option<&'a [String]>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A stored user, as `jwt mint` and sign-in need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub disabled: bool,
    pub roles: Vec<String>,
}

/// What one version changed, as far as a sidecar's snapshot is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Anything (a policy apply): reload everything.
    Policy,
    /// A JWT id was revoked.
    Jti(String),
    /// A user's tokens were revoked up to a time (by user id).
    UserTokens(i64),
    /// An API token was issued or revoked (by token id).
    Token(String),
}

/// Versions newer than the last sidecar snapshot, and what each changed: `None` when the log
/// cannot account for every one of them (reload everything).
pub type ChangesSince = Option<Vec<Change>>;

/// Everything a snapshot is built from, read in one consistent view: the rules (a document of
/// permissions and roles only; users and service accounts are in `subjects`) and the subjects.
#[derive(Debug, Clone)]
pub struct StoredState {
    pub document: PolicyDocument,
    pub subjects: Subjects,
    pub version: i64,
    /// The candidate policy stored beside the live one, if any.
    pub candidate: Option<Candidate>,
}

/// A candidate policy (`policy apply --shadow`): a policy file as applied, and whether it
/// prunes. What it would enforce is the live policy merged with it, so it follows changes
/// made to the live policy meanwhile; every sidecar evaluates it beside the live one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub file: PolicyDocument,
    pub prune: bool,
    /// When it was stored (unix seconds).
    pub created_at: i64,
}

/// What a candidate plan does, inside the store's write lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidateStep {
    /// Nothing to write.
    Nothing,
    /// Store this candidate, replacing any other.
    Store(Candidate),
    /// Drop the candidate.
    Discard,
    /// Write this document as the live policy and drop the candidate, in one transaction.
    Promote(PolicyDocument),
}

/// Decides, from the live policy (whole), its version and the stored candidate, what to do
/// with the candidate. An error writes nothing and is returned.
pub type CandidatePlan<'a> = Box<
    dyn FnOnce(&PolicyDocument, i64, Option<&Candidate>) -> Result<CandidateStep, PolicyError>
        + Send
        + 'a,
>;

/// Decides, from the stored policy and its version, what to write: `Ok(None)` writes nothing,
/// an error writes nothing and is returned. Runs inside the write transaction, after the lock.
pub type PolicyPlan<'a> = Box<
    dyn FnOnce(&PolicyDocument, i64) -> Result<Option<PolicyDocument>, PolicyError> + Send + 'a,
>;

/// Announced policy changes (PostgreSQL `LISTEN`, or the in-memory store's channel).
#[async_trait::async_trait]
pub trait ChangeFeed: Send {
    /// The next announced version; `Ok(None)` when announcements may have been lost in
    /// between (refresh anyway).
    async fn next(&mut self) -> Result<Option<i64>, StoreError>;
}

/// What portcullis needs from storage. Every write that changes what a decision depends on
/// bumps the policy version and announces it.
#[async_trait::async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// The current policy version; cheap enough to poll.
    async fn policy_version(&self) -> Result<i64, StoreError>;
    /// The whole policy and its version.
    async fn load_policy(&self) -> Result<(PolicyDocument, i64), StoreError>;
    /// The policy, the subjects (users, accounts, tokens, deleted ids, revoked JWT ids) and
    /// the version.
    async fn load_state(&self) -> Result<StoredState, StoreError>;
    /// What every version after `version` changed, up to `until` (the current version).
    async fn changes_since(&self, version: i64, until: i64) -> Result<ChangesSince, StoreError>;
    /// A stored user's current state, by id (`None`: no longer stored).
    async fn load_user(&self, id: i64) -> Result<Option<UserState>, StoreError>;
    /// A stored API token's current state and digest, by token id (`None`: deleted).
    async fn load_token(&self, id: &str) -> Result<Option<([u8; 32], TokenState)>, StoreError>;
    /// A feed of changes, where the store has one: announced (PostgreSQL `NOTIFY`) or watched
    /// (a SQLite file's `PRAGMA data_version`). `None`: poll only.
    async fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError>;
    /// Locks the policy, runs `plan` over what is stored and writes its result, bumping the
    /// version. Returns the version after (unchanged when nothing was written).
    async fn update_policy(&self, plan: PolicyPlan<'_>) -> Result<i64, StoreError>;
    /// The candidate policy, if one is stored.
    async fn load_candidate(&self) -> Result<Option<Candidate>, StoreError>;
    /// Locks the policy, runs `plan` over the live policy and the candidate and does what it
    /// says, bumping the version unless it says `Nothing`. Returns the version after.
    async fn update_candidate(&self, plan: CandidatePlan<'_>) -> Result<i64, StoreError>;
    async fn find_user(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Revokes one JWT by its `jti`. `expires_at` is the token's `exp` when known: once it is
    /// more than [`REVOCATION_GRACE_SECS`] past, no sidecar could accept the token any more,
    /// so the revocation is no longer loaded and the next revocation deletes it. `None` keeps
    /// it for ever. Revoking an id already revoked changes nothing.
    async fn revoke_jti(&self, jti: &str, expires_at: Option<i64>) -> Result<(), StoreError>;
    /// Revokes every JWT of a user issued up to `now`.
    async fn revoke_user_tokens(&self, email: &str, now: i64) -> Result<(), StoreError>;
    async fn insert_token(&self, token: NewToken<'_>) -> Result<(), StoreError>;
    /// Tokens, optionally of one owner (a user's email or a service account's name).
    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes a token (idempotent) and bumps the version.
    async fn revoke_token(&self, id: &str) -> Result<(), StoreError>;
    /// Records last-used times (called in batches, off the request path).
    async fn record_token_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError>;
    /// The token with this digest, with its owner as stored now.
    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<TokenRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d = crate::identity::digest("pcs_x");
        assert_eq!(unhex(&hex(&d)), Some(d));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
