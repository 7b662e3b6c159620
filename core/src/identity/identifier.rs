//! The `Identifier`: turns a request's credential into a `Principal`, with caches keyed by the
//! SHA-256 digest of the token (never the token). A cached JWT identity expires no later than
//! its token. API tokens are resolved from the snapshot the request is decided against (never
//! a store); their identities are cached per snapshot version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::mpsc;

use super::api_token::{self, TokenRecord};
use super::credential::{self, Presented, Source};
use super::keys::KeySet;
use super::principal::{Principal, UnixTime};
use super::settings::{ApiTokenSettings, JwtSettings};
use super::verify::{ClaimRules, TokenError};
use super::{digest, IdentityError, TokenDigest};

/// How long a cache entry may live: `ttl`, or until `expires` (plus `grace`) when that is
/// sooner. A clock that cannot be read expires the entry at once.
fn lifetime(ttl: Duration, expires: Option<UnixTime>, grace: Duration) -> Duration {
    match (expires, UnixTime::now()) {
        (None, _) => ttl,
        (Some(at), Some(now)) => now.until(at.plus(grace)).min(ttl),
        (Some(_), None) => Duration::ZERO,
    }
}

/// Expires each cached JWT identity at its token's `exp` (plus leeway) or the cache TTL,
/// whichever comes first.
struct UntilTokenExpiry {
    ttl: Duration,
    leeway: Duration,
}

impl moka::Expiry<TokenDigest, Arc<Principal>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        p: &Arc<Principal>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(lifetime(self.ttl, p.expires_at(), self.leeway))
    }
}

/// Expires each cached API-token identity when its token expires, or after the cache TTL.
struct ApiTokenExpiry {
    ttl: Duration,
}

impl moka::Expiry<TokenDigest, (i64, Arc<Principal>)> for ApiTokenExpiry {
    fn expire_after_create(
        &self,
        _: &TokenDigest,
        (_, p): &(i64, Arc<Principal>),
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(lifetime(self.ttl, p.expires_at(), Duration::ZERO))
    }
}

/// API-token identities resolved from a snapshot, each tagged with the snapshot version it was
/// resolved in and served only to requests decided against that same version: a revocation,
/// a disabled owner or a role change (each a new version) is never answered from here.
pub struct ApiTokenCache {
    entries: Cache<TokenDigest, (i64, Arc<Principal>)>,
}

impl ApiTokenCache {
    fn new(capacity: u64, settings: &ApiTokenSettings) -> Self {
        ApiTokenCache {
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(ApiTokenExpiry {
                    ttl: settings.cache_ttl,
                })
                .build(),
        }
    }

    /// Drops every entry: they belong to an older snapshot (frees memory; correctness does
    /// not depend on it).
    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }
}

/// What a request presented, once checked.
#[derive(Debug, Clone)]
pub enum Identified {
    /// No credential: anonymous.
    Nobody,
    /// A verified JWT.
    Caller(Arc<Principal>),
    /// A well-formed API token, by digest, to be found in the snapshot.
    ApiToken(TokenDigest),
}

/// What the identifier has seen since it started, for the metrics endpoint: the credentials
/// presented, by kind, and how often each cache answered. Relaxed counters, never a label of
/// who or which token.
#[derive(Debug, Default)]
pub struct IdentifyCounts {
    pub no_credential: AtomicU64,
    pub jwt_header: AtomicU64,
    pub jwt_cookie: AtomicU64,
    pub api_token: AtomicU64,
    /// A credential refused before it was read (two at once, a malformed header).
    pub refused: AtomicU64,
    pub jwt_cache_hits: AtomicU64,
    pub jwt_cache_misses: AtomicU64,
    pub api_token_cache_hits: AtomicU64,
    pub api_token_cache_misses: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Verifies credentials into principals, with caches of verified tokens.
pub struct Identifier {
    keys: KeySet,
    rules: ClaimRules,
    cookie_name: String,
    token_header: String,
    pub(super) cache: Cache<TokenDigest, Arc<Principal>>,
    api_tokens: Arc<ApiTokenCache>,
    usage: Option<mpsc::Sender<(String, i64)>>,
    counts: Arc<IdentifyCounts>,
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
        Self::with_api_tokens(keys, jwt, ApiTokenSettings::default())
    }

    /// An identifier with API-token settings (the header they may come in, the cache).
    pub fn with_api_tokens(
        keys: KeySet,
        jwt: impl Into<JwtSettings>,
        api: impl Into<ApiTokenSettings>,
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
                leeway: rules.leeway,
            })
            .build();
        Identifier {
            keys,
            rules,
            cookie_name,
            token_header: api.header.clone(),
            cache,
            api_tokens: Arc::new(ApiTokenCache::new(cache_capacity, &api)),
            usage: None,
            counts: Arc::default(),
        }
    }

    /// Where token uses are reported (`(token id, unix seconds)`), for batched last-used writes.
    pub fn report_usage_to(&mut self, sink: mpsc::Sender<(String, i64)>) {
        self.usage = Some(sink);
    }

    /// The counters of what this identifier has seen (credentials, cache answers).
    pub fn counts(&self) -> Arc<IdentifyCounts> {
        self.counts.clone()
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The API-token cache, for whoever must clear it when the policy changes.
    pub fn api_token_cache(&self) -> Arc<ApiTokenCache> {
        self.api_tokens.clone()
    }

    /// Verifies a JWT, answering from the cache when this exact token was verified before.
    pub fn verify_jwt(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let key = digest(token);
        let now = UnixTime::now().ok_or(TokenError::ClockUnavailable)?;
        if let Some(p) = self.cache.get(&key) {
            // The cache expires entries on time; this guards the boundary regardless.
            if p.expires_at()
                .is_none_or(|e| now <= e.plus(self.rules.leeway))
            {
                count(&self.counts.jwt_cache_hits);
                return Ok(p);
            }
            self.cache.invalidate(&key);
        }
        count(&self.counts.jwt_cache_misses);
        let (payload, _key) = self.keys.verify_signature(token)?;
        let claims = self.rules.check(&payload, now)?;
        let principal = Arc::new(Principal::from_claims(claims)?);
        self.cache.insert(key, principal.clone());
        Ok(principal)
    }

    /// The identity of a well-formed API token in the snapshot at `version`: from the cache
    /// when this token was resolved in the same version, else through `lookup` (the
    /// snapshot's record for the digest). Revoked, expired and disabled are refused; a use is
    /// reported for last-used bookkeeping.
    pub fn resolve_api_token(
        &self,
        digest: &TokenDigest,
        version: i64,
        lookup: impl FnOnce(&TokenDigest) -> Option<TokenRecord>,
    ) -> Result<Arc<Principal>, TokenError> {
        let now = UnixTime::now().ok_or(TokenError::ClockUnavailable)?;
        let principal = match self.api_tokens.entries.get(digest) {
            Some((at, p)) if at == version => {
                count(&self.counts.api_token_cache_hits);
                p
            }
            _ => {
                count(&self.counts.api_token_cache_misses);
                let record = lookup(digest)
                    .filter(|r| r.digest_matches(digest))
                    .ok_or(TokenError::UnknownApiToken)?;
                let p = Arc::new(api_token::resolve_record(record, now.as_secs())?);
                self.api_tokens
                    .entries
                    .insert(*digest, (version, p.clone()));
                p
            }
        };
        if principal.expires_at().is_some_and(|e| now >= e) {
            return Err(TokenError::ExpiredApiToken);
        }
        if let (Some(sink), Some(id)) = (&self.usage, principal.token_id()) {
            // Dropped when the writer is behind: last-used is advisory.
            let _ = sink.try_send((id.to_owned(), now.as_secs()));
        }
        Ok(principal)
    }

    /// Identifies the caller of a request from its headers: a verified JWT, a well-formed
    /// API token to look up, or nobody. Never asks a store.
    pub fn identify<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Identified, IdentityError> {
        let presented = credential::extract(headers, &self.cookie_name, &self.token_header)
            .inspect_err(|_| count(&self.counts.refused))?;
        match presented {
            Presented::Nothing => count(&self.counts.no_credential),
            Presented::Jwt {
                source: Source::Cookie,
                ..
            } => count(&self.counts.jwt_cookie),
            Presented::Jwt { .. } => count(&self.counts.jwt_header),
            Presented::ApiToken { .. } => count(&self.counts.api_token),
        }
        match presented {
            Presented::Nothing => Ok(Identified::Nobody),
            Presented::Jwt { token, .. } => Ok(Identified::Caller(self.verify_jwt(token)?)),
            Presented::ApiToken { token, .. } => {
                api_token::check_format(token)
                    .map_err(|e| IdentityError::ApiToken(TokenError::MalformedApiToken(e)))?;
                Ok(Identified::ApiToken(digest(token)))
            }
        }
    }
}
