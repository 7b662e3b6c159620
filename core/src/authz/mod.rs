//! The decision: canonical path, then identity, then policy. A deny is a value with a closed
//! `Reason`; "could not decide" is a deny too (503), never an error, so callers always answer.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

pub mod answer;
pub mod bundle;
mod deny;
mod shadow;

pub use answer::{CredentialForwarding, ForwardCredentialConfig, Stripping};
pub use bundle::{Bundle, BundleError, BundleJwt, Decider, BUNDLE_FORMAT};
pub use deny::{CsrfError, Deny, DenyCause, DenyStatus, Reason, Revocation};
pub use shadow::decide_on;

use crate::identity::{
    Identified, Identifier, IdentityError, JwtCaller, PresentedKind, Principal, TokenDigest,
    TokenOwner, TokenRecord, UnixTime,
};
use crate::policy::validate::valid_name;
use crate::policy::{path, PolicySnapshot, Subjects, TokenHolder};

/// A request to decide, borrowed from whatever carried it (Envoy's CheckRequest, the CLI).
/// `Debug` shows header names only: values carry credentials.
#[derive(Clone, Default)]
pub struct AccessRequest<'a> {
    pub method: &'a str,
    /// The URL scheme Envoy saw (`https`, `http`); empty when unknown.
    pub scheme: &'a str,
    /// `Host`/`:authority` as received.
    pub host: &'a str,
    /// The raw request target: path and query, undecoded.
    pub path: &'a str,
    /// Header (lower-case name, value) pairs; repeated headers appear repeatedly.
    pub headers: Vec<(&'a str, Cow<'a, str>)>,
    /// The first header whose value was not UTF-8, if any: the request is refused.
    pub not_utf8: Option<&'a str>,
}

impl std::fmt::Debug for AccessRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequest")
            .field("method", &self.method)
            .field("scheme", &self.scheme)
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

/// An allowed request: who, with which permissions, and what allowed it.
#[derive(Debug, Clone)]
pub struct Allow {
    pub principal: Option<Arc<Principal>>,
    /// The caller's roles as decided: from the token, or from the store in `store` mode.
    pub roles: Vec<String>,
    /// Names of every permission the caller holds in this snapshot, sorted.
    pub permissions: Vec<Arc<str>>,
    pub matched_permission: String,
    pub matched_activity: String,
    pub policy_version: i64,
    /// The snapshot that decided ([`PolicySnapshot::serial`]): with the principal, it fixes
    /// the roles and permissions above, so what is rendered from them can be reused.
    pub snapshot_serial: u64,
}

#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    /// A deny decided under `snapshot`'s policy.
    fn deny(
        snapshot: &PolicySnapshot,
        principal: Option<Arc<Principal>>,
        cause: DenyCause,
    ) -> Self {
        Decision::Deny(Deny::new(principal, cause).at_version(snapshot.version()))
    }

    /// The version of the policy in force when this was decided (`None`: no policy loaded).
    pub fn policy_version(&self) -> Option<i64> {
        match self {
            Decision::Allow(a) => Some(a.policy_version),
            Decision::Deny(d) => d.policy_version,
        }
    }
}

/// Shared handle to the current snapshot: readers load it lock-free; a reload swaps it whole.
pub type SnapshotHandle = Arc<ArcSwapOption<PolicySnapshot>>;

/// Where a JWT caller's permissions come from: the token's claims as issued, or the user's
/// current roles in the store (carried in the snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionSource {
    #[default]
    Token,
    Store,
}

/// Which claim of a JWT names the stored user (`jwt.subject_claim`): `sub`, the stored user
/// id (tokens portcullis mints), or a verified `email` (tokens from an outside identity
/// provider, whose `sub` the store does not know).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectClaim {
    #[default]
    Sub,
    Email,
}

/// How JWT callers meet the store: which claim names them, and where their permissions come
/// from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwtSubjects {
    pub permissions_from: PermissionSource,
    pub subject_claim: SubjectClaim,
}

impl From<PermissionSource> for JwtSubjects {
    fn from(permissions_from: PermissionSource) -> Self {
        JwtSubjects {
            permissions_from,
            subject_claim: SubjectClaim::Sub,
        }
    }
}

/// Decides requests against the current snapshot.
#[derive(Debug)]
pub struct Authorizer {
    snapshot: SnapshotHandle,
    /// The candidate policy, evaluated beside the live one and never enforced.
    shadow: Option<SnapshotHandle>,
    identifier: Arc<Identifier>,
    jwt: JwtSubjects,
}

impl Authorizer {
    pub fn new(snapshot: SnapshotHandle, identifier: Arc<Identifier>) -> Self {
        Authorizer {
            snapshot,
            shadow: None,
            identifier,
            jwt: JwtSubjects::default(),
        }
    }

    /// Where JWT callers' permissions come from (`jwt.permissions_from`).
    pub fn with_permission_source(mut self, source: PermissionSource) -> Self {
        self.jwt.permissions_from = source;
        self
    }

    /// Which JWT claim names the stored user (`jwt.subject_claim`).
    pub fn with_subject_claim(mut self, claim: SubjectClaim) -> Self {
        self.jwt.subject_claim = claim;
        self
    }

    /// Decides a request: canonical path, then the caller's identity, then the policy.
    pub async fn decide(&self, req: &AccessRequest<'_>) -> Decision {
        self.decide_now(req)
    }

    /// [`Authorizer::decide`], for callers without an executor (the in-process filter): the
    /// decision never waits on anything.
    pub fn decide_now(&self, req: &AccessRequest<'_>) -> Decision {
        let guard = self.snapshot.load();
        let (snapshot, canonical) = match prepare(guard.as_ref(), req) {
            Ok(ready) => ready,
            Err(deny) => return deny,
        };
        let principal = match self.identifier.identify(req.header_pairs()) {
            Ok(Identified::Nobody) => None,
            Ok(Identified::Caller(p)) => Some(p),
            Ok(Identified::ApiToken(digest)) => {
                let found = self
                    .identifier
                    .resolve_api_token(&digest, snapshot.version(), |d| {
                        token_record(snapshot.subjects(), d)
                    });
                match found {
                    Ok(p) => Some(p),
                    Err(e) => return refused(snapshot, PresentedKind::ApiToken, e.into()),
                }
            }
            Err(e) => {
                let kind = e.presented();
                let cause = match e {
                    IdentityError::Credential(e) => e.into(),
                    IdentityError::Token(e) | IdentityError::ApiToken(e) => e.into(),
                };
                return refused(snapshot, kind, cause);
            }
        };
        decide_with(
            snapshot, req.method, req.host, &canonical, principal, self.jwt,
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
                self.jwt,
            ),
            Err(deny) => deny,
        }
    }
}

/// A deny for a request whose credential of `kind` was refused before anyone was identified.
fn refused(snapshot: &PolicySnapshot, kind: PresentedKind, cause: DenyCause) -> Decision {
    Decision::Deny(
        Deny::new(None, cause)
            .at_version(snapshot.version())
            .refusing(kind),
    )
}

/// The serving snapshot and the canonical path, or the deny when either is missing.
fn prepare<'s, 'r>(
    snapshot: Option<&'s Arc<PolicySnapshot>>,
    req: &AccessRequest<'r>,
) -> Result<(&'s PolicySnapshot, Cow<'r, str>), Decision> {
    let Some(snapshot) = snapshot else {
        return Err(Decision::Deny(Deny::new(None, DenyCause::NoSnapshot)));
    };
    if let Some(name) = req.not_utf8 {
        let name = name.to_owned();
        let cause = DenyCause::HeaderNotUtf8 { name };
        return Err(Decision::deny(snapshot, None, cause));
    }
    match path::canonicalize(req.path) {
        Ok(p) => Ok((snapshot, p)),
        Err(e) => Err(Decision::deny(snapshot, None, e.into())),
    }
}

/// The stored record of the API token with this digest, with its holder as the snapshot has
/// it now (roles, disabled); `None` for an unknown token or one whose holder is gone.
fn token_record(subjects: &Subjects, digest: &TokenDigest) -> Option<TokenRecord> {
    let token = subjects.token(digest)?;
    let owner = match &token.holder {
        TokenHolder::User(id) => {
            let user = subjects.user(&id.to_string())?;
            TokenOwner::User {
                id: *id,
                email: user.email.clone(),
                name: user.name.clone(),
                disabled: user.disabled,
                roles: user.roles.clone(),
            }
        }
        TokenHolder::ServiceAccount(name) => {
            let account = subjects.account(name)?;
            TokenOwner::ServiceAccount {
                name: name.clone(),
                disabled: account.disabled,
                roles: account.roles.clone(),
            }
        }
    };
    Some(TokenRecord {
        id: token.id.clone(),
        digest: *digest,
        owner,
        expires_at: token.expires_at,
        revoked_at: token.revoked.then_some(0),
        permissions: token.limit.clone(),
    })
}

/// Checks a JWT caller against the store's current state, as carried in the snapshot:
/// revoked token ids, deleted, disabled and revoked users. Returns the user's stored roles
/// when permissions come from the store.
fn check_jwt_subject<'s>(
    snapshot: &'s PolicySnapshot,
    jwt: &JwtCaller,
    rules: JwtSubjects,
) -> Result<Option<&'s [String]>, Revocation> {
    let subjects = snapshot.subjects();
    let source = rules.permissions_from;
    // A revoked session (logout) is in the same set as revoked token ids.
    if jwt
        .jti
        .iter()
        .chain(jwt.sid.iter())
        .any(|id| subjects.is_revoked(id))
    {
        return Err(Revocation::TokenRevoked);
    }
    let user = match rules.subject_claim {
        SubjectClaim::Sub => {
            if subjects.is_deleted(&jwt.subject) {
                return Err(Revocation::UserDeleted);
            }
            subjects.user(&jwt.subject)
        }
        SubjectClaim::Email => match jwt.email.as_deref() {
            Some(email) if jwt.email_verified => subjects.user_by_email(email),
            _ => return Err(Revocation::EmailNotVerified),
        },
    };
    match user {
        Some(u) if u.disabled => Err(Revocation::UserDisabled),
        Some(u)
            if u.tokens_valid_after.is_some_and(|t| {
                jwt.issued_at
                    .is_none_or(|iat| iat <= UnixTime::from_secs(t))
            }) =>
        {
            Err(Revocation::UserTokensRevoked)
        }
        Some(u) if source == PermissionSource::Store => Ok(Some(&u.roles)),
        None if source == PermissionSource::Store => Err(Revocation::NotInStore),
        _ => Ok(None),
    }
}

/// The policy step alone, for a caller already identified (or not).
pub fn decide_with(
    snapshot: &PolicySnapshot,
    method: &str,
    host: &str,
    canonical_path: &str,
    principal: Option<Arc<Principal>>,
    jwt_subjects: impl Into<JwtSubjects>,
) -> Decision {
    let jwt_subjects = jwt_subjects.into();
    let host = path::normalize_host(host);
    let stored_roles = match principal.as_deref() {
        Some(Principal::Jwt(jwt)) => match check_jwt_subject(snapshot, jwt, jwt_subjects) {
            Ok(roles) => roles,
            Err(why) => return Decision::deny(snapshot, principal, why.into()),
        },
        _ => None,
    };
    let grants = match (principal.as_deref(), stored_roles) {
        (None, _) => snapshot.grants(false, [], []),
        (Some(_), Some(roles)) => snapshot.grants(true, [], roles.iter().map(String::as_str)),
        (Some(Principal::Jwt(j)), None) => snapshot.grants(
            true,
            j.permissions.iter().map(String::as_str),
            j.roles.iter().map(String::as_str),
        ),
        (Some(Principal::ApiToken(t)), None) => snapshot.limited_grants(
            true,
            [],
            t.roles.iter().map(String::as_str),
            t.limit.as_deref(),
        ),
        (Some(Principal::Assumed { permissions }), None) => {
            snapshot.grants(true, permissions.iter().map(String::as_str), [])
        }
    };
    let Some(m) = snapshot.evaluate(method, &host, canonical_path, &grants) else {
        return Decision::deny(snapshot, principal, DenyCause::NoActivity { held: grants });
    };
    let permissions = snapshot.permission_names(&grants);
    let mut roles: Vec<String> = match (stored_roles, principal.as_deref()) {
        (Some(roles), _) => roles.to_vec(),
        // Roles named in a token reach the upstream only when they are valid names (letters,
        // digits, `_ . : -`): `viewer,admin` would read as two roles to an upstream.
        (None, Some(Principal::Jwt(j))) => {
            j.roles.iter().filter(|r| valid_name(r)).cloned().collect()
        }
        // A limited token must not present its owner's roles: an upstream deciding on
        // x-auth-roles would ignore the limit.
        (None, Some(Principal::ApiToken(t))) if t.limit.is_some() => Vec::new(),
        (None, Some(Principal::ApiToken(t))) => t.roles.clone(),
        (None, Some(Principal::Assumed { .. }) | None) => Vec::new(),
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
        snapshot_serial: snapshot.serial(),
    })
}

/// Decision ids: UUIDv7, so they are unique, not guessable from one another (74 random bits),
/// and sort by time across sidecars.
#[derive(Debug, Default)]
pub struct DecisionIds;

impl DecisionIds {
    pub fn new() -> Self {
        DecisionIds
    }

    pub fn next(&self) -> String {
        uuid::Uuid::now_v7().hyphenated().to_string()
    }
}

#[cfg(test)]
mod tests;
