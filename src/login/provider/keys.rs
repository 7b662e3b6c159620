//! Fetching from the provider, bounded (size, time, https only but on loopback, no redirects),
//! and the provider's signing keys kept fresh: refreshed before `max-age` runs out, an unknown
//! `kid` fetched at most once per cooldown with one fetch in flight, unknown kids remembered,
//! the last good set kept when a fetch fails.

use super::*;

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

pub(super) fn parse_max_age(header: &str) -> Option<Duration> {
    header.split(',').find_map(|d| {
        let d = d.trim();
        let v = d.strip_prefix("max-age=")?;
        v.parse::<u64>().ok().map(Duration::from_secs)
    })
}

pub(super) fn json<T: for<'de> Deserialize<'de>>(
    url: &str,
    body: &[u8],
) -> Result<T, ProviderError> {
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

pub(super) struct FetchState {
    pub(super) last_fetch: Option<Instant>,
    pub(super) unknown: HashMap<String, Instant>,
}

/// Whether refreshing the keys works. When it does not, the last good set keeps verifying
/// and this says so: `/status`, a metric, and one log line when refreshes start failing and
/// one when they recover (never one per attempt).
#[derive(Debug, Default)]
pub(super) struct RefreshHealth {
    failures: std::sync::atomic::AtomicU64,
    failing_since: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl RefreshHealth {
    fn record(&self, outcome: &Result<Duration, ProviderError>) {
        let mut since = match self.failing_since.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match outcome {
            Ok(_) => {
                if since.take().is_some() {
                    tracing::info!("provider keys: refresh recovered");
                }
            }
            Err(e) => {
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if since.is_none() {
                    *since = Some(std::time::SystemTime::now());
                    tracing::warn!(error = %crate::error_chain(e), "provider keys: refresh failing; serving with the last good set");
                } else {
                    tracing::debug!(error = %crate::error_chain(e), "provider keys: refresh still failing");
                }
            }
        }
    }
}

/// The provider's signing keys, with the refresh rules above.
pub struct ProviderKeys {
    pub(super) url: String,
    pub(super) http: reqwest::Client,
    pub(super) cooldown: Duration,
    pub(super) current: RwLock<Arc<CoreJsonWebKeySet>>,
    /// Held while fetching: at most one fetch in flight.
    pub(super) fetch_state: tokio::sync::Mutex<FetchState>,
    pub(super) fetches: std::sync::atomic::AtomicU64,
    pub(super) health: RefreshHealth,
}

impl ProviderKeys {
    /// No keys yet, none fetched: the first fetch fills the set.
    pub(super) fn new(url: String, http: reqwest::Client, cooldown: Duration) -> Self {
        ProviderKeys {
            url,
            http,
            cooldown,
            current: RwLock::new(Arc::new(CoreJsonWebKeySet::new(Vec::new()))),
            fetch_state: tokio::sync::Mutex::new(FetchState {
                last_fetch: None,
                unknown: HashMap::new(),
            }),
            fetches: std::sync::atomic::AtomicU64::new(0),
            health: RefreshHealth::default(),
        }
    }

    /// Since when fetching the keys has failed (the last good set still serves); `None` while
    /// the last fetch succeeded.
    pub fn failing_since(&self) -> Option<std::time::SystemTime> {
        match self.health.failing_since.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// For `/status`: `refresh` is `ok` or `failing` (the last good set still verifies),
    /// since when (unix seconds), and the failed fetches so far.
    pub fn status(&self) -> serde_json::Value {
        let since = self
            .failing_since()
            .map(|t| crate::value::UnixTime::from_system(t).map_or(0, |u| u.as_secs()));
        serde_json::json!({
            "refresh": if since.is_some() { "failing" } else { "ok" },
            "failing_since": since,
            "failed_fetches": self.failed_fetches(),
        })
    }

    /// How many fetches of the key set have failed.
    pub fn failed_fetches(&self) -> u64 {
        self.health
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn current(&self) -> Arc<CoreJsonWebKeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(super) fn has(set: &CoreJsonWebKeySet, kid: &str) -> bool {
        set.keys()
            .iter()
            .any(|k| k.key_id().is_some_and(|id| id.as_str() == kid))
    }

    /// Fetches the set now (caller holds the fetch lock); a failure keeps the last good set.
    pub(super) async fn fetch_locked(
        &self,
        state: &mut FetchState,
    ) -> Result<Duration, ProviderError> {
        state.last_fetch = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = self.fetch_set(state).await;
        self.health.record(&outcome);
        outcome
    }

    async fn fetch_set(&self, state: &mut FetchState) -> Result<Duration, ProviderError> {
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
        // A failure keeps the last good set (logged once by the health record).
        let _ = self.fetch_locked(&mut state).await;
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
                Err(_) => self.cooldown.max(MIN_REFRESH),
            };
        }
    }
}

pub(super) fn remember_unknown(unknown: &mut HashMap<String, Instant>, kid: &str, now: Instant) {
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
