//! The `Identifier`: turns a request's credential into a `Principal`, with caches keyed by the
//! SHA-256 digest of the token (never the token). A cached JWT identity expires no later than
//! its token; an API-token resolution (valid, or known to be no good) is kept for a bounded
//! time, a store failure never. `ApiTokenCache` is the handle the reloader clears when the
//! policy changes; a lookup in flight across a clear does not cache what it found.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::mpsc;

use super::api_token::{self, TokenLookup, TokenOwner, TokenRecord};
use super::credential::{self, Presented};
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
            Resolved::Valid(p) => lifetime(self.ttl, p.expires_at(), Duration::ZERO),
            Resolved::Invalid(_) => self.negative_ttl,
        })
    }
}

/// Cached API-token resolutions, and how often the store had to be asked.
pub struct ApiTokenCache {
    entries: Cache<TokenDigest, Resolved>,
    /// Bumped by `forget_all`; a lookup that straddles a bump is not cached.
    generation: AtomicU64,
    store_lookups: AtomicU64,
}

impl ApiTokenCache {
    fn new(capacity: u64, settings: &ApiTokenSettings) -> Self {
        ApiTokenCache {
            entries: Cache::builder()
                .max_capacity(capacity)
                .expire_after(ApiTokenExpiry {
                    ttl: settings.cache_ttl,
                    negative_ttl: settings.negative_cache_ttl,
                })
                .build(),
            generation: AtomicU64::new(0),
            store_lookups: AtomicU64::new(0),
        }
    }

    /// Drops every cached resolution: the policy changed (a revocation, a disabled owner,
    /// changed roles), so the next use asks the store.
    pub fn forget_all(&self) {
        // Bump first: a lookup already in flight read the old generation and will not cache
        // what it found (it may predate the revocation that caused this).
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }

    /// How many API-token lookups reached the store since start.
    pub fn store_lookups(&self) -> u64 {
        self.store_lookups.load(Ordering::Relaxed)
    }
}

/// Verifies credentials into principals, with caches of verified tokens.
pub struct Identifier {
    keys: KeySet,
    rules: ClaimRules,
    cookie_name: String,
    token_header: String,
    pub(super) cache: Cache<TokenDigest, Arc<Principal>>,
    api_tokens: Arc<ApiTokenCache>,
    lookup: Option<Arc<dyn TokenLookup>>,
    usage: Option<mpsc::Sender<(String, i64)>>,
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
            lookup,
            usage: None,
        }
    }

    /// Where token uses are reported (`(token id, unix seconds)`), for batched last-used writes.
    pub fn report_usage_to(&mut self, sink: mpsc::Sender<(String, i64)>) {
        self.usage = Some(sink);
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
                return Ok(p);
            }
            self.cache.invalidate(&key);
        }
        let (payload, _key) = self.keys.verify_signature(token)?;
        let claims = self.rules.check(&payload, now)?;
        let principal = Arc::new(Principal::from_claims(claims)?);
        self.cache.insert(key, principal.clone());
        Ok(principal)
    }

    /// Resolves an API token: format first (no store), then the cache, then the store.
    pub async fn resolve_api_token(&self, token: &str) -> Result<Arc<Principal>, IdentityError> {
        api_token::check_format(token).map_err(TokenError::MalformedApiToken)?;
        let key = digest(token);
        let now = UnixTime::now().ok_or(TokenError::ClockUnavailable)?;
        let cache = &self.api_tokens;
        let resolved = match cache.entries.get(&key) {
            Some(r) => r,
            None => {
                let lookup = self.lookup.as_ref().ok_or(TokenError::UnknownApiToken)?;
                cache.store_lookups.fetch_add(1, Ordering::Relaxed);
                let generation = cache.generation.load(Ordering::SeqCst);
                let record = lookup.find_token(&key).await?;
                let resolved = match record {
                    Some(r) if r.digest_matches(&key) => check_record(r, now),
                    _ => Resolved::Invalid(TokenError::UnknownApiToken),
                };
                if cache.generation.load(Ordering::SeqCst) == generation {
                    cache.entries.insert(key, resolved.clone());
                }
                resolved
            }
        };
        match resolved {
            Resolved::Valid(p) if p.expires_at().is_none_or(|e| now < e) => {
                if let (Some(sink), Some(id)) = (&self.usage, p.token_id()) {
                    // Dropped when the writer is behind: last-used is advisory.
                    let _ = sink.try_send((id.to_owned(), now.as_secs()));
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

fn check_record(record: TokenRecord, now: UnixTime) -> Resolved {
    let disabled = match &record.owner {
        TokenOwner::User { disabled, .. } | TokenOwner::ServiceAccount { disabled, .. } => {
            *disabled
        }
    };
    if record.revoked_at.is_some() {
        Resolved::Invalid(TokenError::RevokedApiToken)
    } else if record
        .expires_at
        .is_some_and(|e| UnixTime::from_secs(e) <= now)
    {
        Resolved::Invalid(TokenError::ExpiredApiToken)
    } else if disabled {
        Resolved::Invalid(TokenError::DisabledOwner)
    } else {
        Resolved::Valid(Arc::new(Principal::from_token(record)))
    }
}
