//! Outside issuers' keys for Check (`jwt.issuers`, `jwt.jwks_url`): one task per issuer
//! fetches its JWKS at start (readiness waits for it), again before `max-age` runs out, and
//! when a token names an unknown kid, at most once per cooldown. The task is the only fetcher,
//! so one fetch at most is ever in flight; a failed fetch keeps the last good set. The request
//! path only sends the kid on a bounded channel and never waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::IssuerConfig;
use crate::identity::{IssuerBinding, RemoteKeys};
use crate::login::provider::{fetch, http_client};

/// Kids waiting to be looked for; beyond this, asks are dropped (the cooldown would drop them).
const WANTED_QUEUE: usize = 64;
const MIN_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// One outside issuer: its keys (shared with the key set) and what keeps them fresh.
pub struct RemoteIssuer {
    pub keys: Arc<RemoteKeys>,
    pub ready: Arc<AtomicBool>,
    pub fetches: Arc<AtomicU64>,
    config: IssuerConfig,
    wanted: mpsc::Receiver<String>,
}

impl RemoteIssuer {
    pub fn new(config: &IssuerConfig) -> Self {
        let (tx, rx) = mpsc::channel(WANTED_QUEUE);
        let binding = IssuerBinding {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        };
        let keys = Arc::new(RemoteKeys::new(
            binding,
            Box::new(move |kid: &str| {
                let _ = tx.try_send(kid.chars().take(128).collect());
            }),
        ));
        RemoteIssuer {
            keys,
            ready: Arc::new(AtomicBool::new(false)),
            fetches: Arc::new(AtomicU64::new(0)),
            config: config.clone(),
            wanted: rx,
        }
    }

    /// Fetches now; the next scheduled refresh.
    async fn refresh(&self, http: &reqwest::Client) -> Duration {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = fetch(http, &self.config.jwks_url, None)
            .await
            .map(|(body, max_age)| {
                let text = String::from_utf8_lossy(&body).into_owned();
                (crate::identity::jwk::parse_jwks(&text), max_age)
            });
        match fetched {
            Ok((Ok(keys), max_age)) => {
                self.keys.replace(keys);
                self.ready.store(true, Ordering::Relaxed);
                max_age.map_or(DEFAULT_REFRESH, |a| (a * 3 / 4).max(MIN_REFRESH))
            }
            Ok((Err(e), _)) => {
                tracing::warn!(issuer = %self.config.issuer, error = %crate::error_chain(&e), "issuer keys refused; keeping the last good set");
                self.config.jwks_cooldown
            }
            Err(e) => {
                tracing::warn!(issuer = %self.config.issuer, error = %crate::error_chain(&e), "issuer keys fetch failed; keeping the last good set");
                self.config.jwks_cooldown
            }
        }
    }

    /// Keeps the keys fresh until `stop`.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let http = match http_client(self.config.fetch_timeout) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "issuer keys: no HTTP client");
                return;
            }
        };
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        let mut last = Instant::now();
        let mut due = tokio::time::Instant::now() + self.refresh(&http).await;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    last = Instant::now();
                    due = tokio::time::Instant::now() + self.refresh(&http).await;
                }
                Some(kid) = self.wanted.recv() => {
                    // Known by now, or asked too soon: no fetch (the negative cache).
                    if self.keys.has(&kid) || last.elapsed() < self.config.jwks_cooldown {
                        continue;
                    }
                    last = Instant::now();
                    due = tokio::time::Instant::now() + self.refresh(&http).await;
                }
                () = &mut stopped => return,
            }
        }
    }
}
