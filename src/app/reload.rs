//! Keeps the serving snapshot fresh, off the request path: loads it at start and whenever the
//! store's version changes (announced, or found by polling), compiles it on a blocking thread,
//! swaps it in atomically and clears the API-token cache it was handed. A snapshot that fails
//! to load or compile leaves the previous one serving; an outage is logged once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::authz::SnapshotHandle;
use crate::identity::ApiTokenCache;
use crate::store::{ChangeFeed, PolicyStore};

/// Longest pause between attempts while the store is unreachable.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// The gRPC service name health is reported under (besides the overall "").
pub const CHECK_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

pub(super) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(CHECK_SERVICE_NAME, status)
        .await;
}

/// What the reloader knows about the snapshot and the store (served on `/status`).
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub(super) version: Option<i64>,
    pub(super) loaded_at: Option<SystemTime>,
    pub(super) store_reachable: bool,
    pub(super) last_error: Option<String>,
}

/// The reloader and everything it updates.
pub(super) struct Reloader {
    pub store: Arc<dyn PolicyStore>,
    pub snapshot: SnapshotHandle,
    /// Cleared on every new version: it may be a revocation, a disabled owner or changed roles.
    pub api_tokens: Arc<ApiTokenCache>,
    pub health: HealthReporter,
    pub status: Arc<Mutex<ReloadStatus>>,
    pub interval: Duration,
}

impl Reloader {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failing: Option<String> = None;
        let mut feed: Option<Box<dyn ChangeFeed>> = None;
        let mut wait = self.interval;
        loop {
            match self.refresh().await {
                Ok(loaded) => {
                    if let Some(version) = loaded {
                        self.api_tokens.forget_all();
                        tracing::info!(version, "policy snapshot loaded");
                        set_health(&self.health, ServingStatus::Serving).await;
                    }
                    if failing.take().is_some() {
                        tracing::info!("policy store reachable again");
                    }
                    wait = self.interval;
                    if let Ok(mut s) = self.status.lock() {
                        s.store_reachable = true;
                        s.last_error = None;
                        if let Some(version) = loaded {
                            s.version = Some(version);
                            s.loaded_at = Some(SystemTime::now());
                        }
                    }
                }
                Err(e) => {
                    let message = crate::error_chain(&*e);
                    // Once per outage, not once per attempt; later causes only at debug.
                    match &failing {
                        None => {
                            tracing::error!(error = %message, serving_version = self.snapshot.load().as_ref().map(|s| s.version()), "cannot refresh policy; keeping the last good snapshot")
                        }
                        Some(previous) if *previous != message => {
                            tracing::debug!(error = %message, "policy refresh still failing")
                        }
                        Some(_) => {}
                    }
                    failing = Some(message.clone());
                    wait = (wait * 2).min(MAX_RETRY_WAIT.max(self.interval));
                    if let Ok(mut s) = self.status.lock() {
                        s.store_reachable = false;
                        s.last_error = Some(message);
                    }
                }
            }
            if feed.is_none() && failing.is_none() {
                match self.store.listen().await {
                    Ok(f) => feed = f,
                    Err(e) => {
                        tracing::debug!(error = %crate::error_chain(&e), "cannot listen for policy changes; polling")
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = next_change(&mut feed) => {
                    if changed.is_err() {
                        feed = None;
                    }
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Rebuilds the snapshot if the stored version differs from the one serving; compiling
    /// runs on a blocking thread, never on the workers that answer Check.
    async fn refresh(&self) -> Result<Option<i64>, Box<dyn std::error::Error + Send + Sync>> {
        let version = self.store.policy_version().await?;
        let serving = self.snapshot.load_full();
        if serving.as_ref().is_some_and(|s| s.version() == version) {
            return Ok(None);
        }
        let state = self.store.load_state().await?;
        // Only subjects changed (a revocation, a user, a token): keep the compiled rules. The
        // rules are compared as stored, so a change written by hand is never missed.
        if let Some(serving) = serving.filter(|s| s.has_rules_of(&state.document)) {
            let next = serving.with_new_subjects(state.subjects, state.version);
            self.snapshot.store(Some(Arc::new(next)));
            return Ok(Some(state.version));
        }
        let fresh = tokio::task::spawn_blocking(move || crate::manage::compile(state)).await??;
        let loaded = fresh.version();
        self.snapshot.store(Some(Arc::new(fresh)));
        Ok(Some(loaded))
    }
}

/// The next announced change, or never without a feed.
async fn next_change(feed: &mut Option<Box<dyn ChangeFeed>>) -> Result<(), ()> {
    match feed {
        Some(f) => f.next().await.map(|_| ()).map_err(|_| ()),
        None => std::future::pending().await,
    }
}
