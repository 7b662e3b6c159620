//! Who is calling: credential extraction (`credential`), JWT verification (`verify`) against
//! keys built from bytes (`keys`, `jwk`, `pem`, held to the `strength` rules), minting (`mint`)
//! and API tokens (`api_token`), with caches of resolved identities keyed by a SHA-256 digest
//! of the token, never the token. A cached JWT identity expires no later than the token; a
//! store failure is never cached. Knows nothing of policy, gRPC, SQL, files or configuration:
//! the caller reads key files and settings and hands over bytes and `settings` values.

pub mod api_token;
pub mod credential;
pub mod jwk;
pub mod keys;
mod mint;
mod pem;
pub mod settings;
mod strength;
pub mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use api_token::{FormatError, LookupError, TokenLookup, TokenOwner, TokenRecord};
pub use credential::{CredentialError, Presented, Source};
pub use jwk::{JwkError, JwkSetError};
pub use keys::{KeyError, KeySet, SigningKey, VerifyingKey};
pub use settings::{ApiTokenSettings, JwtSettings};
pub use strength::{Curve, MIN_RSA_BITS};
pub use verify::{ClaimRules, Claims, TokenError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    User,
    ServiceAccount,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::ServiceAccount => "service-account",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Jwt,
    ApiToken,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ApiToken => "api-token",
        }
    }
}

/// An identified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub subject_type: SubjectType,
    pub credential: CredentialKind,
    /// The user id (JWT `sub`), or `sa:<name>` for a service account.
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// When set, the caller holds at most these permissions (an API token's limit).
    pub limit: Option<Vec<String>>,
    /// Unix seconds after which the credential is no longer valid (before leeway).
    pub expires_at: f64,
    /// The JWT `jti` or the API token id.
    pub token_id: Option<String>,
    /// The JWT `iat`, when present.
    pub issued_at: Option<f64>,
}

impl Principal {
    fn from_claims(claims: Claims) -> Self {
        Principal {
            subject_type: SubjectType::User,
            credential: CredentialKind::Jwt,
            user_id: claims.sub.unwrap_or_default(),
            email: claims.email,
            name: claims.name,
            roles: claims.roles,
            permissions: claims.permissions,
            limit: None,
            expires_at: claims.exp.map(|e| e.0).unwrap_or(0.0),
            token_id: claims.jti,
            issued_at: claims.iat.map(|i| i.0),
        }
    }

    /// A caller taken to be identified and to hold `permissions`, with no credential behind
    /// it: for `portcullis check --permissions`, never for a request.
    pub fn assumed(permissions: Vec<String>) -> Self {
        Principal {
            subject_type: SubjectType::User,
            credential: CredentialKind::Jwt,
            user_id: "cli".to_owned(),
            email: None,
            name: None,
            roles: Vec::new(),
            permissions,
            limit: None,
            expires_at: f64::MAX,
            token_id: None,
            issued_at: None,
        }
    }

    fn from_token(record: TokenRecord) -> Self {
        let expires_at = record.expires_at.map(|e| e as f64).unwrap_or(f64::MAX);
        let (subject_type, user_id, email, name, roles) = match record.owner {
            TokenOwner::User {
                id,
                email,
                name,
                roles,
                ..
            } => (SubjectType::User, id.to_string(), Some(email), name, roles),
            TokenOwner::ServiceAccount { name, roles, .. } => (
                SubjectType::ServiceAccount,
                format!("sa:{name}"),
                None,
                Some(name),
                roles,
            ),
        };
        Principal {
            subject_type,
            credential: CredentialKind::ApiToken,
            user_id,
            email,
            name,
            roles,
            permissions: Vec::new(),
            limit: record.permissions,
            expires_at,
            token_id: Some(record.id),
            issued_at: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Could not decide: the token store did not answer.
    #[error(transparent)]
    Unavailable(#[from] LookupError),
}

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `ttl`, or `left` seconds when that is sooner (never negative, never overflowing: a token
/// may claim any `exp`).
fn bounded(ttl: Duration, left: f64) -> Duration {
    if left >= ttl.as_secs_f64() {
        ttl
    } else {
        Duration::from_secs_f64(left.max(0.0))
    }
}

/// Expires each cached JWT identity at its token's `exp` (plus leeway) or the cache TTL,
/// whichever comes first.
struct UntilTokenExpiry {
    ttl: Duration,
    leeway: f64,
}

impl moka::Expiry<TokenDigest, Arc<Principal>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        p: &Arc<Principal>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(bounded(self.ttl, p.expires_at + self.leeway - now_unix()))
    }
}

/// What the API-token cache remembers: a resolved principal, or that the token is no good.
#[derive(Debug, Clone)]
enum Resolved {
    Valid(Arc<Principal>),
    Invalid(TokenError),
}

struct ApiTokenExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<TokenDigest, Resolved> for ApiTokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        r: &Resolved,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(match r {
            Resolved::Valid(p) => bounded(self.ttl, p.expires_at - now_unix()),
            Resolved::Invalid(_) => self.negative_ttl,
        })
    }
}

/// Verifies credentials into principals, with caches of verified tokens.
pub struct Identifier {
    keys: KeySet,
    rules: ClaimRules,
    cookie_name: String,
    token_header: String,
    cache: Cache<TokenDigest, Arc<Principal>>,
    api_tokens: Cache<TokenDigest, Resolved>,
    lookup: Option<Arc<dyn TokenLookup>>,
    usage: Option<mpsc::Sender<(String, i64)>>,
    /// Bumped by `forget_api_tokens`; a lookup that straddles a bump is not cached.
    generation: AtomicU64,
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identifier")
            .field("keys", &self.keys)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Identifier {
    /// An identifier for JWTs; API tokens (in the default header) are refused as unknown.
    pub fn new(keys: KeySet, jwt: impl Into<JwtSettings>) -> Self {
        Self::with_api_tokens(keys, jwt, ApiTokenSettings::default(), None)
    }

    /// An identifier that also resolves API tokens through `lookup`.
    pub fn with_api_tokens(
        keys: KeySet,
        jwt: impl Into<JwtSettings>,
        api: impl Into<ApiTokenSettings>,
        lookup: Option<Arc<dyn TokenLookup>>,
    ) -> Self {
        let JwtSettings {
            rules,
            cookie_name,
            cache_ttl,
            cache_capacity,
        } = jwt.into();
        let api = api.into();
        let cache = Cache::builder()
            .max_capacity(cache_capacity)
            .expire_after(UntilTokenExpiry {
                ttl: cache_ttl,
                leeway: rules.leeway.as_secs_f64(),
            })
            .build();
        let api_tokens = Cache::builder()
            .max_capacity(cache_capacity)
            .expire_after(ApiTokenExpiry {
                ttl: api.cache_ttl,
                negative_ttl: api.negative_cache_ttl,
            })
            .build();
        Identifier {
            keys,
            rules,
            cookie_name,
            token_header: api.header,
            cache,
            api_tokens,
            lookup,
            usage: None,
            generation: AtomicU64::new(0),
        }
    }

    /// Where token uses are reported (`(token id, unix seconds)`), for batched last-used writes.
    pub fn report_usage_to(&mut self, sink: mpsc::Sender<(String, i64)>) {
        self.usage = Some(sink);
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Drops every cached API-token resolution: called when the policy version changes (a
    /// revocation, a disabled owner, changed roles), so the next use asks the store.
    pub fn forget_api_tokens(&self) {
        // Bump first: a lookup already in flight read the old generation and will not cache
        // what it found (it may predate the revocation that caused this).
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.api_tokens.invalidate_all();
    }

    /// Verifies a JWT, answering from the cache when this exact token was verified before.
    pub fn verify_jwt(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let key = digest(token);
        let now = now_unix();
        if let Some(p) = self.cache.get(&key) {
            // The cache expires entries on time; this guards the boundary regardless.
            if now <= p.expires_at + self.rules.leeway.as_secs_f64() {
                return Ok(p);
            }
            self.cache.invalidate(&key);
        }
        let (payload, _key) = self.keys.verify_signature(token)?;
        let claims = self.rules.check(&payload, now)?;
        let principal = Arc::new(Principal::from_claims(claims));
        self.cache.insert(key, principal.clone());
        Ok(principal)
    }

    /// Resolves an API token: format first (no store), then the cache, then the store.
    pub async fn resolve_api_token(&self, token: &str) -> Result<Arc<Principal>, IdentityError> {
        api_token::check_format(token).map_err(TokenError::MalformedApiToken)?;
        let key = digest(token);
        let now = now_unix();
        let resolved = match self.api_tokens.get(&key) {
            Some(r) => r,
            None => {
                let lookup = self.lookup.as_ref().ok_or(TokenError::UnknownApiToken)?;
                tracing::debug!("api token looked up in the store");
                let generation = self.generation.load(Ordering::SeqCst);
                let record = lookup.find_token(&key).await?;
                let resolved = match record {
                    Some(r) if r.digest_matches(&key) => check_record(r, now),
                    _ => Resolved::Invalid(TokenError::UnknownApiToken),
                };
                if self.generation.load(Ordering::SeqCst) == generation {
                    self.api_tokens.insert(key, resolved.clone());
                }
                resolved
            }
        };
        match resolved {
            Resolved::Valid(p) if now < p.expires_at => {
                if let (Some(sink), Some(id)) = (&self.usage, &p.token_id) {
                    // Dropped when the writer is behind: last-used is advisory.
                    let _ = sink.try_send((id.clone(), now as i64));
                }
                Ok(p)
            }
            Resolved::Valid(_) => Err(TokenError::ExpiredApiToken.into()),
            Resolved::Invalid(e) => Err(e.into()),
        }
    }

    /// Identifies the caller of a request from its headers: `Ok(None)` when it presents nothing.
    pub async fn identify<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Arc<Principal>>, IdentityError> {
        match credential::extract(headers, &self.cookie_name, &self.token_header)? {
            Presented::Nothing => Ok(None),
            Presented::Jwt { token, .. } => Ok(Some(self.verify_jwt(token)?)),
            Presented::ApiToken { token, .. } => Ok(Some(self.resolve_api_token(token).await?)),
        }
    }
}

fn check_record(record: TokenRecord, now: f64) -> Resolved {
    let disabled = match &record.owner {
        TokenOwner::User { disabled, .. } | TokenOwner::ServiceAccount { disabled, .. } => {
            *disabled
        }
    };
    if record.revoked_at.is_some() {
        Resolved::Invalid(TokenError::RevokedApiToken)
    } else if record.expires_at.is_some_and(|e| (e as f64) <= now) {
        Resolved::Invalid(TokenError::ExpiredApiToken)
    } else if disabled {
        Resolved::Invalid(TokenError::DisabledOwner)
    } else {
        Resolved::Valid(Arc::new(Principal::from_token(record)))
    }
}

#[cfg(test)]
mod tests;
