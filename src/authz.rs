//! The decision: canonical path, then identity, then policy. A deny is a value with a closed
//! `Reason`; "could not decide" is a deny too (503), never an error, so callers always answer.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::identity::{CredentialKind, Identifier, IdentityError, Principal};
use crate::policy::{path, PolicySnapshot};

/// A request to decide, borrowed from whatever carried it (Envoy's CheckRequest, the CLI).
/// `Debug` shows header names only: values carry credentials.
#[derive(Clone, Default)]
pub struct AccessRequest<'a> {
    pub method: &'a str,
    /// `Host`/`:authority` as received.
    pub host: &'a str,
    /// The raw request target: path and query, undecoded.
    pub path: &'a str,
    /// Header (lower-case name, value) pairs; repeated headers appear repeatedly.
    pub headers: Vec<(&'a str, Cow<'a, str>)>,
}

impl std::fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequest")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<'a> AccessRequest<'a> {
    fn header_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_ref()))
    }
}

/// Why a request was denied. The wire code is what clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingCredential,
    InvalidToken,
    AmbiguousCredential,
    InvalidPath,
    NoMatchingActivity,
    PolicyUnavailable,
    TokenStoreUnavailable,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingCredential => "missing_credential",
            Reason::InvalidToken => "invalid_token",
            Reason::AmbiguousCredential => "ambiguous_credential",
            Reason::InvalidPath => "invalid_path",
            Reason::NoMatchingActivity => "no_matching_activity",
            Reason::PolicyUnavailable => "policy_unavailable",
            Reason::TokenStoreUnavailable => "token_store_unavailable",
        }
    }

    pub fn status(self) -> DenyStatus {
        match self {
            Reason::MissingCredential | Reason::InvalidToken | Reason::AmbiguousCredential => {
                DenyStatus::Unauthenticated
            }
            Reason::InvalidPath | Reason::NoMatchingActivity => DenyStatus::Forbidden,
            Reason::PolicyUnavailable | Reason::TokenStoreUnavailable => DenyStatus::Unavailable,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 401
    Unauthenticated,
    /// 403
    Forbidden,
    /// 503
    Unavailable,
}

impl DenyStatus {
    pub fn http_code(self) -> u16 {
        match self {
            DenyStatus::Unauthenticated => 401,
            DenyStatus::Forbidden => 403,
            DenyStatus::Unavailable => 503,
        }
    }
    pub fn error(self) -> &'static str {
        match self {
            DenyStatus::Unauthenticated => "unauthenticated",
            DenyStatus::Forbidden => "forbidden",
            DenyStatus::Unavailable => "unavailable",
        }
    }
}

/// An allowed request: who, with which permissions, and what allowed it.
#[derive(Debug, Clone)]
pub struct Allow {
    pub principal: Option<Arc<Principal>>,
    /// The caller's roles as decided: from the token, or from the store in `store` mode.
    pub roles: Vec<String>,
    /// Names of every permission the caller holds in this snapshot, sorted.
    pub permissions: Vec<String>,
    pub matched_permission: String,
    pub matched_activity: String,
    pub policy_version: i64,
}

#[derive(Debug, Clone)]
pub struct Deny {
    pub reason: Reason,
    pub principal: Option<Arc<Principal>>,
    /// Internal detail for the log, never sent to the client.
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    fn deny(reason: Reason, principal: Option<Arc<Principal>>, detail: Option<String>) -> Self {
        Decision::Deny(Deny {
            reason,
            principal,
            detail,
        })
    }
}

/// Shared handle to the current snapshot: readers load it lock-free; a reload swaps it whole.
pub type SnapshotHandle = Arc<ArcSwapOption<PolicySnapshot>>;

/// Where a JWT caller's permissions come from: the token's claims as issued, or the user's
/// current roles in the store (carried in the snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionSource {
    #[default]
    Token,
    Store,
}

/// Decides requests against the current snapshot.
#[derive(Debug)]
pub struct Authorizer {
    snapshot: SnapshotHandle,
    identifier: Arc<Identifier>,
    source: PermissionSource,
}

impl Authorizer {
    pub fn new(snapshot: SnapshotHandle, identifier: Arc<Identifier>) -> Self {
        Authorizer {
            snapshot,
            identifier,
            source: PermissionSource::Token,
        }
    }

    /// Where JWT callers' permissions come from (`jwt.permissions_from`).
    pub fn with_permission_source(mut self, source: PermissionSource) -> Self {
        self.source = source;
        self
    }

    /// Decides a request: canonical path, then the caller's identity, then the policy.
    pub async fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        let guard = self.snapshot.load();
        let (snapshot, canonical) = match prepare(guard.as_ref(), req) {
            Ok(ready) => ready,
            Err(deny) => return deny,
        };
        let principal = match self.identifier.identify(req.header_pairs()).await {
            Ok(p) => p,
            Err(IdentityError::Unavailable(e)) => {
                return Decision::deny(Reason::TokenStoreUnavailable, None, Some(e.to_string()))
            }
            Err(IdentityError::Credential(e)) => {
                let reason = if e.is_ambiguous() {
                    Reason::AmbiguousCredential
                } else {
                    Reason::InvalidToken
                };
                return Decision::deny(reason, None, Some(e.to_string()));
            }
            Err(IdentityError::Token(e)) => {
                return Decision::deny(Reason::InvalidToken, None, Some(e.to_string()))
            }
        };
        decide_with(
            snapshot,
            req.method,
            req.host,
            &canonical,
            principal,
            self.source,
        )
    }

    /// Decides a request for a caller identified some other way (`portcullis check
    /// --permissions`): the same path and policy steps as `decide`, without a credential.
    pub fn decide_as(&self, req: &AccessRequest<'_>, principal: Arc<Principal>) -> Decision {
        let guard = self.snapshot.load();
        match prepare(guard.as_ref(), req) {
            Ok((snapshot, canonical)) => decide_with(
                snapshot,
                req.method,
                req.host,
                &canonical,
                Some(principal),
                self.source,
            ),
            Err(deny) => deny,
        }
    }
}

/// The serving snapshot and the canonical path, or the deny when either is missing.
fn prepare<'s, 'r>(
    snapshot: Option<&'s Arc<PolicySnapshot>>,
    req: &AccessRequest<'r>,
) -> Result<(&'s PolicySnapshot, Cow<'r, str>), Decision> {
    let Some(snapshot) = snapshot else {
        return Err(Decision::deny(
            Reason::PolicyUnavailable,
            None,
            Some("no policy snapshot loaded".to_owned()),
        ));
    };
    match path::canonicalize(req.path) {
        Ok(p) => Ok((snapshot, p)),
        Err(e) => Err(Decision::deny(
            Reason::InvalidPath,
            None,
            Some(e.to_string()),
        )),
    }
}

/// The policy step alone, for a caller already identified (or not): shared with `portcullis check`.
pub fn decide_with(
    snapshot: &PolicySnapshot,
    method: &str,
    host: &str,
    canonical_path: &str,
    principal: Option<Arc<Principal>>,
    source: PermissionSource,
) -> Decision {
    let host = path::normalize_host(host);
    // A JWT is checked against the store's current state, as carried in the snapshot.
    let mut stored_roles: Option<&[String]> = None;
    if let Some(p) = principal
        .as_ref()
        .filter(|p| p.credential == CredentialKind::Jwt)
    {
        let subjects = snapshot.subjects();
        let refuse = |why: &str| {
            Decision::deny(
                Reason::InvalidToken,
                principal.clone(),
                Some(why.to_owned()),
            )
        };
        if p.token_id
            .as_deref()
            .is_some_and(|jti| subjects.is_revoked(jti))
        {
            return refuse("token revoked");
        }
        if subjects.is_deleted(&p.user_id) {
            return refuse("user deleted");
        }
        match subjects.user(&p.user_id) {
            Some(u) if u.disabled => return refuse("user disabled"),
            Some(u)
                if u.tokens_valid_after
                    .is_some_and(|t| p.issued_at.is_none_or(|iat| iat <= t as f64)) =>
            {
                return refuse("the user's tokens were revoked");
            }
            Some(u) if source == PermissionSource::Store => stored_roles = Some(&u.roles),
            None if source == PermissionSource::Store => {
                return refuse("no such user in the store")
            }
            _ => {}
        }
    }
    let grants = match (&principal, stored_roles) {
        (Some(_), Some(roles)) => snapshot.grants(true, [], roles.iter().map(String::as_str)),
        (Some(p), None) => snapshot.limited_grants(
            true,
            p.permissions.iter().map(String::as_str),
            p.roles.iter().map(String::as_str),
            p.limit.as_deref(),
        ),
        (None, _) => snapshot.grants(false, [], []),
    };
    match snapshot.evaluate(method, &host, canonical_path, &grants) {
        Some(m) => {
            let mut permissions: Vec<String> = grants
                .ids()
                .map(|id| snapshot.permission_name(id).to_owned())
                .collect();
            permissions.sort_unstable();
            let mut roles: Vec<String> = match (stored_roles, &principal) {
                (Some(roles), _) => roles.to_vec(),
                // A limited token must not present its owner's roles: an upstream deciding
                // on x-auth-roles would ignore the limit.
                (None, Some(p)) if p.limit.is_some() => Vec::new(),
                (None, Some(p)) => p.roles.clone(),
                (None, None) => Vec::new(),
            };
            roles.sort_unstable();
            roles.dedup();
            Decision::Allow(Allow {
                matched_permission: m.permission.to_owned(),
                matched_activity: m.activity.to_string(),
                principal,
                roles,
                permissions,
                policy_version: snapshot.version(),
            })
        }
        None => {
            let held: Vec<&str> = grants
                .ids()
                .map(|id| snapshot.permission_name(id))
                .collect();
            let detail = Some(format!(
                "no activity granted by [{}] matches",
                held.join(",")
            ));
            let reason = if principal.is_none() {
                Reason::MissingCredential
            } else {
                Reason::NoMatchingActivity
            };
            Decision::deny(reason, principal, detail)
        }
    }
}

/// Unique, unguessable-enough decision ids without a syscall per request: a random
/// per-process prefix and a counter.
pub struct DecisionIds {
    prefix: u64,
    next: AtomicU64,
}

impl DecisionIds {
    pub fn new() -> Self {
        DecisionIds {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:08x}", self.prefix, n)
    }
}

impl Default for DecisionIds {
    fn default() -> Self {
        Self::new()
    }
}
