//! Keeps the serving snapshot fresh, off the request path: loads it at start and whenever the
//! store's version changes (announced, or found by polling) and swaps it in atomically. A
//! change the store's log names entry by entry (a revocation, a token) is patched into the
//! subjects; a change that leaves the rules as stored swaps the subjects; only a change of
//! rules compiles, on a blocking thread. A snapshot that fails to load or compile leaves the
//! previous one serving; an outage is logged once (`health`), and an outage another caller of
//! the store finds wakes the reloader to retry on its backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::app::refresh::health::StoreHealth;
use crate::app::refresh::shadow::ShadowReload;
use crate::app::refresh::status::ReloadStatus;
use crate::authz::SnapshotHandle;
use crate::identity::ApiTokenCache;
use crate::policy::{PolicyDocument, PolicySnapshot, Subjects};
use crate::store::{Candidate, Change, ChangeFeed, PolicyStore, StoreError};

/// Longest pause between attempts while the store is unreachable.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// The first retry after a failed refresh; each next one waits twice as long, up to
/// `MAX_RETRY_WAIT`, whatever the reload interval.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(250);

/// The gRPC service name health is reported under (besides the overall "").
pub const CHECK_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

pub(in crate::app) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(CHECK_SERVICE_NAME, status)
        .await;
}

/// The reloader and everything it updates.
pub(in crate::app) struct Reloader {
    pub store: Arc<dyn PolicyStore>,
    pub snapshot: SnapshotHandle,
    /// Cleared on every new version: it may be a revocation, a disabled owner or changed roles.
    pub api_tokens: Arc<ApiTokenCache>,
    pub health: HealthReporter,
    pub status: Arc<Mutex<ReloadStatus>>,
    pub store_health: StoreHealth,
    pub interval: Duration,
    /// The candidate policy, rebuilt with every live snapshot.
    pub shadow: ShadowReload,
}

impl Reloader {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failing: Option<String> = None;
        let mut feed: Option<Box<dyn ChangeFeed>> = None;
        let mut wait = self.interval;
        loop {
            let started = std::time::Instant::now();
            match self.refresh().await {
                Ok(loaded) => {
                    if let Some(version) = loaded {
                        self.api_tokens.forget_all();
                        tracing::info!(version, "policy snapshot loaded");
                        set_health(&self.health, ServingStatus::Serving).await;
                    }
                    failing = None;
                    self.store_health.reached(started);
                    wait = self.interval;
                    if let Ok(mut s) = self.status.lock() {
                        s.last_error = None;
                        s.refreshes += 1;
                        if let Some(version) = loaded {
                            s.version = Some(version);
                            s.loaded_at = Some(SystemTime::now());
                            s.last_load_seconds = Some(started.elapsed().as_secs_f64());
                        }
                    }
                }
                Err(e) => {
                    let message = crate::error_chain(&*e);
                    let outage = e.downcast_ref::<StoreError>().is_some_and(|e| {
                        self.store_health
                            .failed("refreshing the policy", e, started)
                    });
                    // Not the store (a policy that does not compile): once per cause.
                    if !outage && failing.as_ref() != Some(&message) {
                        tracing::error!(error = %message, serving_version = self.snapshot.load().as_ref().map(|s| s.version()), "cannot refresh policy; keeping the last good snapshot");
                    }
                    // Backoff from a short first retry, never longer than MAX_RETRY_WAIT: a
                    // long reload interval must not delay noticing the store is back.
                    wait = match failing {
                        None => FIRST_RETRY_WAIT,
                        Some(_) => (wait * 2).min(MAX_RETRY_WAIT),
                    };
                    failing = Some(message.clone());
                    if let Ok(mut s) = self.status.lock() {
                        s.last_error = Some(message);
                        s.refresh_failures += 1;
                    }
                }
            }
            if feed.is_none() && failing.is_none() {
                let started = std::time::Instant::now();
                match self.store.listen().await {
                    Ok(Some(f)) => {
                        // A change announced before the listener existed was missed: check
                        // once more now that no announcement can be.
                        feed = Some(f);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if !self
                            .store_health
                            .failed("listening for policy changes", &e, started)
                        {
                            tracing::debug!(error = %crate::error_chain(&e), "cannot listen for policy changes; polling")
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = next_change(&mut feed) => {
                    // A lost LISTEN connection: refresh now, which finds out whether the
                    // store itself is gone.
                    if changed.is_err() {
                        feed = None;
                    }
                }
                () = self.store_health.outage_reported(), if failing.is_none() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Swaps in a newer snapshot when the stored version differs from the one serving.
    async fn refresh(&mut self) -> Result<Option<i64>, RefreshError> {
        let serving = self.snapshot.load_full();
        let Some(next) = next_snapshot(&*self.store, serving.as_deref()).await? else {
            return Ok(None);
        };
        let version = next.snapshot.version();
        let live = Arc::new(next.snapshot);
        self.snapshot.store(Some(live.clone()));
        self.shadow.update(&live, next.loaded).await;
        if let Ok(mut s) = self.status.lock() {
            (s.candidate_stored_at, s.candidate_error) = self.shadow.status();
        }
        Ok(Some(version))
    }
}

/// Why a refresh failed (the store, or a policy that does not compile).
pub type RefreshError = Box<dyn std::error::Error + Send + Sync>;

/// A snapshot to serve, and the rules and candidate policy it was loaded with (`None` when
/// only its subjects were patched).
pub struct Next {
    pub snapshot: PolicySnapshot,
    pub loaded: Option<(PolicyDocument, Option<Candidate>)>,
}

/// The snapshot to serve after `serving`, or `None` when the store's version is the one
/// serving. As cheap as the change allows: a change the store's log names entry by entry (a
/// revocation, a token) is patched into the subjects, read one entry at a time; a change that
/// leaves the rules as stored swaps the subjects; only a change of rules compiles, on a
/// blocking thread, never on the workers that answer Check.
pub async fn next_snapshot(
    store: &dyn PolicyStore,
    serving: Option<&PolicySnapshot>,
) -> Result<Option<Next>, RefreshError> {
    let version = store.policy_version().await?;
    if serving.is_some_and(|s| s.version() == version) {
        return Ok(None);
    }
    if let Some(serving) = serving {
        if let Some(subjects) = patched_subjects(store, serving, version).await? {
            let snapshot = serving.with_new_subjects(subjects, version);
            return Ok(Some(Next {
                snapshot,
                loaded: None,
            }));
        }
    }
    let mut state = store.load_state().await?;
    let loaded = Some((state.document.clone(), state.candidate.take()));
    // The rules are compared as stored, so a change written by hand is never missed.
    if let Some(serving) = serving.filter(|s| s.has_rules_of(&state.document)) {
        let snapshot = serving.with_new_subjects(state.subjects, state.version);
        return Ok(Some(Next { snapshot, loaded }));
    }
    let snapshot = tokio::task::spawn_blocking(move || crate::manage::compile(state)).await??;
    Ok(Some(Next { snapshot, loaded }))
}

/// The serving subjects with every change since the serving version applied; `None` when a
/// change needs a full load (a policy apply, a version the log does not account for, an entry
/// that is gone).
async fn patched_subjects(
    store: &dyn PolicyStore,
    serving: &PolicySnapshot,
    version: i64,
) -> Result<Option<Subjects>, StoreError> {
    let Some(changes) = store.changes_since(serving.version(), version).await? else {
        return Ok(None);
    };
    let mut subjects = serving.subjects().clone();
    for change in changes {
        match change {
            Change::Policy => return Ok(None),
            Change::Jti(jti) => subjects.revoke_jti(jti),
            Change::UserTokens(id) => match store.load_user(id).await? {
                Some(user) => subjects.insert_user(id.to_string(), user),
                None => return Ok(None),
            },
            Change::Token(id) => match store.load_token(&id).await? {
                Some((digest, token)) => subjects.insert_token(digest, token),
                None => return Ok(None),
            },
        }
    }
    Ok(Some(subjects))
}

/// The next announced change, or never without a feed.
async fn next_change(feed: &mut Option<Box<dyn ChangeFeed>>) -> Result<(), ()> {
    match feed {
        Some(f) => f.next().await.map(|_| ()).map_err(|_| ()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
