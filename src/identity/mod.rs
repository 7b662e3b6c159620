//! Who is calling: credential extraction (`credential`), JWT verification (`jwt`) and the cache
//! of verified identities, keyed by a SHA-256 digest of the token and expiring no later than
//! the token does. Knows nothing of policy or gRPC.

pub mod credential;
pub mod jwt;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use sha2::{Digest, Sha256};

pub use credential::{CredentialError, Presented, Source};
pub use jwt::{ClaimRules, Claims, KeyError, KeySet, TokenError};

use crate::config::JwtConfig;

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
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
        }
    }
}

/// An identified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub subject_type: SubjectType,
    pub credential: CredentialKind,
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    /// Unix seconds after which the credential is no longer valid (before leeway).
    pub expires_at: f64,
    pub token_id: Option<String>,
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
            expires_at: claims.exp.map(|e| e.0).unwrap_or(0.0),
            token_id: claims.jti,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Token(#[from] TokenError),
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

/// Expires each cached identity at its token's `exp` (plus leeway) or the cache TTL,
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
        let left = (p.expires_at + self.leeway - now_unix()).max(0.0);
        Some(self.ttl.min(Duration::from_secs_f64(left)))
    }
}

/// Verifies credentials into principals, with a cache of verified tokens.
pub struct Identifier {
    keys: KeySet,
    rules: ClaimRules,
    cookie_name: String,
    cache: Cache<TokenDigest, Arc<Principal>>,
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
    pub fn new(keys: KeySet, config: &JwtConfig) -> Self {
        let rules = ClaimRules::from_config(config);
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(UntilTokenExpiry {
                ttl: config.cache_ttl,
                leeway: rules.leeway.as_secs_f64(),
            })
            .build();
        Identifier {
            keys,
            rules,
            cookie_name: config.cookie_name.clone(),
            cache,
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
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

    /// Identifies the caller of a request from its headers: `Ok(None)` when it presents nothing.
    pub fn identify<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Option<Arc<Principal>>, IdentityError> {
        match credential::extract(headers, &self.cookie_name)? {
            Presented::Nothing => Ok(None),
            Presented::Jwt { token, .. } => Ok(Some(self.verify_jwt(token)?)),
        }
    }
}

#[cfg(test)]
mod tests;
