//! The OpenID provider, as portcullis's client: discovery, the code-flow client (the
//! `openidconnect` crate does the protocol and the ID-token checks), and the provider's keys.
//! Every fetch is bounded in size and time, https only (http on loopback for tests), with no
//! redirects followed. Keys: fetched at start, refreshed in the background before `max-age`
//! runs out; an unknown `kid` causes at most one fetch in flight and one per cooldown, unknown
//! kids are remembered, and a failed fetch keeps the last good set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::core::{
    CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKey,
    Nonce, RedirectUrl,
};
use serde::Deserialize;

use crate::config::{is_acceptable_url, LoginConfig};

/// Largest discovery document, JWKS, tokeninfo or userinfo answer read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Refresh keys at this fraction of their `max-age`, and not more often than `MIN_REFRESH`.
const MIN_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Unknown kids remembered at most (the oldest are forgotten first).
const MAX_UNKNOWN_KIDS: usize = 1024;

pub type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0} is not an https URL (http only on loopback)")]
    InsecureUrl(String),
    #[error("fetching {url} failed")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered more than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} did not answer the expected JSON")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("the provider has no token endpoint")]
    NoTokenEndpoint,
    #[error("bad URL")]
    Url(#[from] url::ParseError),
}

/// A bounded GET returning the body and the `Cache-Control` max-age.
pub async fn fetch(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> Result<(Vec<u8>, Option<Duration>), ProviderError> {
    if !is_acceptable_url(url) {
        return Err(ProviderError::InsecureUrl(url.to_owned()));
    }
    let fail = |source| ProviderError::Fetch {
        url: url.to_owned(),
        source,
    };
    let mut request = http.get(url).header("accept", "application/json");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.map_err(fail)?;
    let status = response.status();
    let max_age = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(ProviderError::TooLarge {
            url: url.to_owned(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(ProviderError::TooLarge {
                url: url.to_owned(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(ProviderError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    Ok((body, max_age))
}

fn parse_max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|d| {
        let d = d.trim();
        let v = d.strip_prefix("max-age=")?;
        v.parse::<u64>().ok().map(Duration::from_secs)
    })
}

fn json<T: for<'de> Deserialize<'de>>(url: &str, body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|source| ProviderError::Json {
        url: url.to_owned(),
        source,
    })
}

/// The HTTP client for the provider: bounded time, no redirects, rustls.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
}

struct FetchState {
    last_fetch: Option<Instant>,
    unknown: HashMap<String, Instant>,
}

/// The provider's signing keys, with the refresh rules above.
pub struct ProviderKeys {
    url: String,
    http: reqwest::Client,
    cooldown: Duration,
    current: RwLock<Arc<CoreJsonWebKeySet>>,
    /// Held while fetching: at most one fetch in flight.
    fetch_state: tokio::sync::Mutex<FetchState>,
    fetches: std::sync::atomic::AtomicU64,
}

impl ProviderKeys {
    fn current(&self) -> Arc<CoreJsonWebKeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn has(set: &CoreJsonWebKeySet, kid: &str) -> bool {
        set.keys()
            .iter()
            .any(|k| k.key_id().is_some_and(|id| id.as_str() == kid))
    }

    /// Fetches the set now (caller holds the fetch lock); a failure keeps the last good set.
    async fn fetch_locked(&self, state: &mut FetchState) -> Result<Duration, ProviderError> {
        state.last_fetch = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (body, max_age) = fetch(&self.http, &self.url, None).await?;
        let set: CoreJsonWebKeySet = json(&self.url, &body)?;
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(set),
            Err(p) => *p.into_inner() = Arc::new(set),
        }
        state.unknown.clear();
        Ok(max_age.map_or(DEFAULT_REFRESH, |a| (a * 3 / 4).max(MIN_REFRESH)))
    }

    /// The keys to verify a token naming `kid`: the current set, refreshed first when the
    /// kid is unknown and the rules allow a fetch.
    pub async fn keys_for(&self, kid: Option<&str>) -> Arc<CoreJsonWebKeySet> {
        let set = self.current();
        let Some(kid) = kid else { return set };
        if Self::has(&set, kid) {
            return set;
        }
        let mut state = self.fetch_state.lock().await;
        // Another request may have fetched while this one waited.
        let set = self.current();
        if Self::has(&set, kid) {
            return set;
        }
        let now = Instant::now();
        let cooling = state
            .last_fetch
            .is_some_and(|t| now.duration_since(t) < self.cooldown);
        let known_unknown = state
            .unknown
            .get(kid)
            .is_some_and(|t| now.duration_since(*t) < self.cooldown);
        if cooling || known_unknown {
            remember_unknown(&mut state.unknown, kid, now);
            return set;
        }
        if let Err(e) = self.fetch_locked(&mut state).await {
            tracing::warn!(error = %crate::error_chain(&e), "provider keys: refresh failed; keeping the last good set");
        }
        let set = self.current();
        if !Self::has(&set, kid) {
            remember_unknown(&mut state.unknown, kid, now);
        }
        set
    }

    /// How many times the key set was fetched (for `/status` and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Refreshes before `max-age` runs out, until `stop`.
    pub async fn refresh_in_background(
        self: Arc<Self>,
        mut next: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(next) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let mut state = self.fetch_state.lock().await;
            next = match self.fetch_locked(&mut state).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "provider keys: scheduled refresh failed; keeping the last good set");
                    self.cooldown.max(MIN_REFRESH)
                }
            };
        }
    }
}

fn remember_unknown(unknown: &mut HashMap<String, Instant>, kid: &str, now: Instant) {
    if unknown.len() >= MAX_UNKNOWN_KIDS {
        if let Some(oldest) = unknown
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(k, _)| k.clone())
        {
            unknown.remove(&oldest);
        }
    }
    // First sighting only: repeated requests must not keep a kid "unknown" forever.
    unknown
        .entry(kid.chars().take(128).collect())
        .or_insert(now);
}

/// The provider, discovered.
pub struct Provider {
    pub issuer: IssuerUrl,
    pub client: OidcClient,
    pub http: reqwest::Client,
    pub keys: Arc<ProviderKeys>,
    /// Every client id whose tokens are accepted (web first).
    pub client_ids: Vec<String>,
    pub userinfo_url: Option<String>,
    pub tokeninfo_url: Option<String>,
    /// When to refresh the keys next.
    pub refresh_after: Duration,
}

/// The algorithms a provider's ID token may be signed with: asymmetric only.
fn allowed_algs() -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm::*;
    vec![
        RsaSsaPkcs1V15Sha256,
        RsaSsaPkcs1V15Sha384,
        RsaSsaPkcs1V15Sha512,
        RsaSsaPssSha256,
        RsaSsaPssSha384,
        RsaSsaPssSha512,
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EdDsa,
    ]
}

impl Provider {
    /// Discovery and the first key fetch.
    pub async fn discover(
        config: &LoginConfig,
        client_secret: ClientSecret,
    ) -> Result<Self, ProviderError> {
        let p = &config.provider;
        let http = http_client(p.fetch_timeout).map_err(|source| ProviderError::Fetch {
            url: p.issuer.clone(),
            source,
        })?;
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let (body, _) = fetch(&http, &discovery, None).await?;
        let metadata: CoreProviderMetadata = json(&discovery, &body)?;
        if metadata.issuer().as_str() != p.issuer {
            return Err(ProviderError::IssuerMismatch {
                found: metadata.issuer().to_string(),
                expected: p.issuer.clone(),
            });
        }
        for url in [
            Some(metadata.authorization_endpoint().as_str()),
            metadata.token_endpoint().map(|u| u.as_str()),
            Some(metadata.jwks_uri().as_str()),
            metadata.userinfo_endpoint().map(|u| u.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if !is_acceptable_url(url) {
                return Err(ProviderError::InsecureUrl(url.to_owned()));
            }
        }
        if metadata.token_endpoint().is_none() {
            return Err(ProviderError::NoTokenEndpoint);
        }
        let keys = Arc::new(ProviderKeys {
            url: metadata.jwks_uri().to_string(),
            http: http.clone(),
            cooldown: p.jwks_cooldown,
            current: RwLock::new(Arc::new(CoreJsonWebKeySet::new(Vec::new()))),
            fetch_state: tokio::sync::Mutex::new(FetchState {
                last_fetch: None,
                unknown: HashMap::new(),
            }),
            fetches: std::sync::atomic::AtomicU64::new(0),
        });
        let refresh_after = {
            let mut state = keys.fetch_state.lock().await;
            keys.fetch_locked(&mut state).await?
        };
        let userinfo_url = metadata.userinfo_endpoint().map(|u| u.to_string());
        let redirect = RedirectUrl::new(format!(
            "{}/auth/callback",
            config.public_url.trim_end_matches('/')
        ))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.client_id.clone()),
            Some(client_secret),
        )
        .set_redirect_uri(redirect);
        Ok(Provider {
            issuer: IssuerUrl::new(p.issuer.clone())?,
            client,
            http,
            keys,
            client_ids: p.client_ids(),
            userinfo_url,
            tokeninfo_url: p.tokeninfo(),
            refresh_after,
        })
    }

    /// Verifies a provider ID token: signature against the provider's keys (refreshed for an
    /// unknown kid within the rules), `iss`, `aud` (one of our client ids, and no untrusted
    /// other audience), `azp` (one of ours; required with several audiences), `exp`, and the
    /// nonce when one is expected.
    pub async fn verify_id_token(
        &self,
        token: &CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<VerifiedIdToken, IdTokenError> {
        let compact = token.to_string();
        let (header, payload) = unverified_parts(&compact).ok_or(IdTokenError::Malformed)?;
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        // The client id the token is for: the first of ours among its audiences.
        let audiences: Vec<String> = match payload.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let Some(client_id) = audiences
            .iter()
            .find(|a| self.client_ids.contains(a))
            .cloned()
        else {
            return Err(IdTokenError::Audience);
        };
        let jwks = self.keys.keys_for(kid.as_deref()).await;
        let ours = self.client_ids.clone();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(client_id),
            self.issuer.clone(),
            (*jwks).clone(),
        )
        .set_allowed_algs(allowed_algs())
        .set_other_audience_verifier_fn(move |aud| ours.iter().any(|o| o == aud.as_str()));
        let claims = match nonce {
            Some(n) => token.claims(&verifier, n),
            None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(|e| IdTokenError::Claims(e.to_string()))?;
        match claims.authorized_party() {
            Some(azp) if !self.client_ids.iter().any(|c| c == azp.as_str()) => {
                return Err(IdTokenError::AuthorizedParty)
            }
            None if claims.audiences().len() > 1 => return Err(IdTokenError::AuthorizedParty),
            _ => {}
        }
        let email_verified = match payload.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            // Some providers send "true"/"false" strings.
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(VerifiedIdToken {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            hd: payload
                .get("hd")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }

    /// Verifies a provider access token: the tokeninfo endpoint must say it was issued to one
    /// of our client ids, and userinfo gives the account's claims (with the same `sub`).
    pub async fn verify_access_token(&self, token: &str) -> Result<VerifiedIdToken, IdTokenError> {
        let Some(tokeninfo) = &self.tokeninfo_url else {
            return Err(IdTokenError::AccessTokensUnsupported);
        };
        let Some(userinfo) = &self.userinfo_url else {
            return Err(IdTokenError::AccessTokensUnsupported);
        };
        let mut url = url::Url::parse(tokeninfo).map_err(|_| IdTokenError::Malformed)?;
        url.query_pairs_mut().append_pair("access_token", token);
        let (body, _) = fetch(&self.http, url.as_str(), None)
            .await
            .map_err(|_| IdTokenError::Rejected)?;
        let info: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| IdTokenError::Rejected)?;
        let ours = |field: &str| {
            info.get(field)
                .and_then(|v| v.as_str())
                .is_some_and(|c| self.client_ids.iter().any(|o| o == c))
        };
        // Google: `aud` is the client the token was issued to, `azp` the requesting party.
        if !(ours("aud") || ours("azp")) {
            return Err(IdTokenError::Audience);
        }
        if info
            .get("expires_in")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .or(v.as_i64())
            })
            .is_some_and(|n| n <= 0)
        {
            return Err(IdTokenError::Claims("access token expired".to_owned()));
        }
        let (body, _) = fetch(&self.http, userinfo, Some(token))
            .await
            .map_err(|_| IdTokenError::Rejected)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| IdTokenError::Rejected)?;
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or(IdTokenError::Rejected)?;
        if info.get("sub").and_then(|v| v.as_str()) != Some(subject) {
            return Err(IdTokenError::Rejected);
        }
        let email_verified = match claims.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        let text = |f: &str| claims.get(f).and_then(|v| v.as_str()).map(str::to_owned);
        Ok(VerifiedIdToken {
            subject: subject.to_owned(),
            email: text("email"),
            email_verified,
            name: text("name"),
            hd: text("hd"),
        })
    }
}

/// The header and payload of a compact JWS, unverified: only to pick the key and client id.
fn unverified_parts(compact: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let mut parts = compact.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    Some((
        serde_json::from_slice(&header).ok()?,
        serde_json::from_slice(&payload).ok()?,
    ))
}

/// What a verified provider token says about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdToken {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub hd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not for one of our client ids")]
    Audience,
    #[error("the token's authorized party is not one of our client ids")]
    AuthorizedParty,
    #[error("the token was refused: {0}")]
    Claims(String),
    #[error("the provider refused the token")]
    Rejected,
    #[error("this provider's access tokens cannot be exchanged (no tokeninfo or userinfo)")]
    AccessTokensUnsupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=21600, must-revalidate"),
            Some(Duration::from_secs(21600))
        );
        assert_eq!(parse_max_age("no-store"), None);
    }

    #[test]
    fn unknown_kids_are_bounded() {
        let mut unknown = HashMap::new();
        let now = Instant::now();
        for i in 0..(MAX_UNKNOWN_KIDS + 50) {
            remember_unknown(&mut unknown, &format!("kid-{i}"), now);
        }
        assert_eq!(unknown.len(), MAX_UNKNOWN_KIDS);
    }

    #[tokio::test]
    async fn fetches_are_https_only_except_loopback_and_bounded_in_size() {
        let http = http_client(Duration::from_secs(5)).expect("client");
        for insecure in [
            "http://accounts.example.com/jwks",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    fetch(&http, insecure, None).await,
                    Err(ProviderError::InsecureUrl(_))
                ),
                "{insecure}"
            );
        }
        // A loopback server answering more than the limit, and one within it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route(
                "/big",
                axum::routing::get(|| async { "x".repeat(MAX_DOCUMENT_BYTES + 1) }),
            )
            .route(
                "/small",
                axum::routing::get(|| async {
                    ([("cache-control", "max-age=600")], "{\"keys\":[]}")
                }),
            )
            .route(
                "/moved",
                axum::routing::get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", "/small")],
                        String::new(),
                    )
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let big = fetch(&http, &format!("http://{addr}/big"), None).await;
        assert!(
            matches!(big, Err(ProviderError::TooLarge { .. })),
            "{big:?}"
        );
        let (body, max_age) = fetch(&http, &format!("http://{addr}/small"), None)
            .await
            .expect("small");
        assert_eq!(body, b"{\"keys\":[]}");
        assert_eq!(max_age, Some(Duration::from_secs(600)));
        let moved = fetch(&http, &format!("http://{addr}/moved"), None).await;
        assert!(
            matches!(moved, Err(ProviderError::Status { status: 302, .. })),
            "redirects are not followed: {moved:?}"
        );
    }

    /// ProviderKeys on a loopback JWKS server that counts its hits.
    async fn keys_served(body: String) -> (Arc<ProviderKeys>, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                async move { ([("cache-control", "max-age=600")], body) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let keys = Arc::new(ProviderKeys {
            url: format!("http://{addr}/jwks"),
            http: http_client(Duration::from_secs(5)).expect("client"),
            cooldown: Duration::from_secs(3600),
            current: RwLock::new(Arc::new(CoreJsonWebKeySet::new(Vec::new()))),
            fetch_state: tokio::sync::Mutex::new(FetchState {
                last_fetch: None,
                unknown: HashMap::new(),
            }),
            fetches: std::sync::atomic::AtomicU64::new(0),
        });
        (keys, hits)
    }

    #[tokio::test]
    async fn keys_are_refreshed_in_the_background_and_then_known() {
        let pem = include_bytes!("../../tests/data/keys/rs256.pub.pem");
        let published =
            crate::identity::publish::publish(jsonwebtoken::Algorithm::RS256, pem).expect("jwk");
        let body = serde_json::json!({"keys": [published.jwk]}).to_string();
        let (keys, hits) = keys_served(body).await;
        assert!(!ProviderKeys::has(&keys.current(), &published.kid));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(
            keys.clone()
                .refresh_in_background(Duration::from_millis(1), stop_rx),
        );
        for _ in 0..500 {
            if ProviderKeys::has(&keys.current(), &published.kid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ProviderKeys::has(&keys.current(), &published.kid));
        // The next refresh waits for most of max-age (600 s): no second fetch now, and a
        // known kid costs none.
        let set = keys.keys_for(Some(&published.kid)).await;
        assert!(ProviderKeys::has(&set, &published.kid));
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        let _ = stop_tx.send(true);
        task.await.expect("stops");
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_once_per_cooldown_and_concurrent_asks_share_it() {
        let (keys, hits) = keys_served("{\"keys\":[]}".to_owned()).await;
        let asks: Vec<_> = (0..20)
            .map(|i| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.keys_for(Some(&format!("kid-{i}"))).await })
            })
            .collect();
        for a in asks {
            a.await.expect("ask");
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(keys.fetch_count(), 1);
    }

    #[test]
    fn a_remembered_kid_is_not_renewed_by_asking_again() {
        let mut unknown = HashMap::new();
        let first = Instant::now();
        remember_unknown(&mut unknown, "k", first);
        remember_unknown(&mut unknown, "k", first + Duration::from_secs(5));
        assert_eq!(unknown["k"], first);
    }
}
