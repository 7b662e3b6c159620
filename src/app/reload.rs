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

use super::health::StoreHealth;
use super::shadow::ShadowReload;
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
    /// When a refresh last reached the store.
    pub(super) reachable_at: Option<SystemTime>,
    /// Refreshes that reached the store, and those that failed.
    pub(super) refreshes: u64,
    pub(super) refresh_failures: u64,
    /// How long the last refresh that loaded a snapshot took, seconds.
    pub(super) last_load_seconds: Option<f64>,
    /// When the candidate policy being evaluated was stored (unix seconds), if one is.
    pub(super) candidate_stored_at: Option<i64>,
    /// Why the stored candidate policy is not evaluated, if it is not.
    pub(super) candidate_error: Option<String>,
    /// An outage has been logged and its end not yet.
    pub(super) outage: bool,
    /// Outages since start (each logged once).
    pub(super) outages: u64,
    /// When a store call last found the store reachable, and unreachable.
    pub(super) reached_since: Option<std::time::Instant>,
    pub(super) unreachable_since: Option<std::time::Instant>,
}

/// The reloader and everything it updates.
pub(super) struct Reloader {
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
mod tests {
    use super::*;
    use crate::identity::{ApiTokenSettings, ClaimRules, Identifier, JwtSettings, KeySet};
    use crate::manage;
    use crate::policy::PolicyDocument;
    use crate::store::MemoryStore;
    use arc_swap::ArcSwapOption;

    const POLICY: &str =
        "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
                          users:\n  - {email: v@x.com, roles: [viewer]}\n";

    fn identifier() -> Identifier {
        let settings = JwtSettings {
            rules: ClaimRules {
                issuer: None,
                audience: Vec::new(),
                leeway: Duration::from_secs(30),
            },
            cookie_name: "jwt-token".to_owned(),
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 100,
        };
        let keys = KeySet::new([], None).expect("no keys");
        Identifier::with_api_tokens(keys, settings, ApiTokenSettings::default())
    }

    /// Polls the handle until `until` holds for the serving snapshot, failing after a bound.
    async fn serving(
        handle: &SnapshotHandle,
        until: impl Fn(&crate::policy::PolicySnapshot) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !handle.load().as_deref().is_some_and(&until) {
            assert!(tokio::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A reloader over an in-memory store holding POLICY, polling once an hour.
    async fn example_reloader() -> (MemoryStore, Reloader) {
        let store = MemoryStore::new();
        let doc = PolicyDocument::from_yaml("t", POLICY).expect("policy");
        manage::apply(&store, &doc, false, false)
            .await
            .expect("applies");
        let (health, _service) = tonic_health::server::health_reporter();
        let status = Arc::new(Mutex::new(ReloadStatus::default()));
        let reloader = Reloader {
            store: Arc::new(store.clone()),
            snapshot: Arc::new(ArcSwapOption::empty()),
            api_tokens: identifier().api_token_cache(),
            health,
            store_health: StoreHealth::new(status.clone()),
            status,
            interval: Duration::from_secs(3600),
            shadow: ShadowReload::new(Arc::new(ArcSwapOption::empty())),
        };
        (store, reloader)
    }

    /// A store that is down at start is retried with backoff up to MAX_RETRY_WAIT, not at
    /// the reload interval: with an interval of an hour, the snapshot still loads within a
    /// few retries of the store coming back. Counts refreshes and failures for the metrics.
    #[tokio::test]
    async fn a_store_down_at_start_is_retried_with_backoff_not_the_interval() {
        let (store, reloader) = example_reloader().await;
        store.set_unreachable(true);
        let (handle, status) = (reloader.snapshot.clone(), reloader.status.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(reloader.run(stop_rx));
        // Failing refreshes: 0, 0.25, 0.75, 1.75 s ...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status.lock().expect("status").refresh_failures < 3 {
            assert!(tokio::time::Instant::now() < deadline, "no retries");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(handle.load().is_none());
        assert!(!status.lock().expect("status").store_reachable);
        store.set_unreachable(false);
        // The next retry is at most MAX_RETRY_WAIT away; `serving` gives up after 10 s,
        // where the reload interval would wait an hour.
        serving(&handle, |s| s.version() == 1).await;
        {
            let s = status.lock().expect("status");
            assert!(s.store_reachable && s.refreshes >= 1 && s.reachable_at.is_some());
            assert!(s.last_load_seconds.is_some());
        }
        stop_tx.send(true).expect("stop");
        task.await.expect("reloader stops");
    }

    /// Waits (bounded) until the status satisfies `until`.
    async fn status_until(status: &Mutex<ReloadStatus>, until: impl Fn(&ReloadStatus) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !until(&status.lock().expect("status")) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "status never changed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A store call between polls (here the last-used writer) that cannot reach the store
    /// flips `store_reachable` at once, with an hour to the next poll; the outage counts once
    /// however many calls fail; the reloader is woken and its backoff notices the end.
    #[tokio::test]
    async fn a_failed_store_call_between_polls_reports_the_outage_once_and_its_end() {
        let (store, reloader) = example_reloader().await;
        let (handle, status) = (reloader.snapshot.clone(), reloader.status.clone());
        let health = reloader.store_health.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(reloader.run(stop_rx.clone()));
        serving(&handle, |s| s.version() == 1).await;
        assert!(status.lock().expect("status").store_reachable);
        let (uses, rx) = tokio::sync::mpsc::channel(8);
        let every = Duration::from_millis(20);
        let shared: Arc<dyn PolicyStore> = Arc::new(store.clone());
        let writer = super::super::usage::write_token_use(shared, health, rx, every, stop_rx);
        let writer = tokio::spawn(writer);

        store.set_unreachable(true);
        uses.send(("tok_a".to_owned(), 1)).await.expect("queued");
        status_until(&status, |s| !s.store_reachable && s.outage).await;
        // Woken, the reloader fails too, and retries on its backoff: still one outage.
        status_until(&status, |s| s.refresh_failures >= 2).await;
        uses.send(("tok_b".to_owned(), 2)).await.expect("queued");
        {
            let s = status.lock().expect("status");
            assert_eq!(s.outages, 1);
            assert!(s
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("unavailable")));
        }
        store.set_unreachable(false);
        status_until(&status, |s| s.store_reachable && !s.outage).await;
        {
            let s = status.lock().expect("status");
            assert_eq!((s.outages, s.last_error.as_deref()), (1, None));
        }
        stop_tx.send(true).expect("stop");
        task.await.expect("reloader stops");
        writer.await.expect("writer stops");
    }

    #[tokio::test]
    async fn announced_changes_reload_and_a_broken_policy_keeps_the_last_good_one() {
        // Polling never fires here (an hour): only announcements can reload.
        let (store, reloader) = example_reloader().await;
        let (handle, status) = (reloader.snapshot.clone(), reloader.status.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(reloader.run(stop_rx));
        serving(&handle, |s| s.version() == 1).await;

        let full_loads = store.full_loads();

        // A revocation is announced and patched in, without loading everything.
        store.revoke_jti("j-1", None).await.expect("revoke");
        serving(&handle, |s| {
            s.version() == 2 && s.subjects().is_revoked("j-1")
        })
        .await;
        // So is a token, its revocation, and a user's revoke-all.
        let issued = manage::issue_token(
            &store,
            crate::store::OwnerRef::User("v@x.com"),
            "",
            0,
            None,
            None,
        )
        .await
        .expect("issued");
        let digest = crate::identity::digest(&issued.token);
        serving(&handle, |s| {
            s.subjects().token(&digest).is_some_and(|t| !t.revoked)
        })
        .await;
        store.revoke_token(&issued.id).await.expect("revoke");
        serving(&handle, |s| {
            s.subjects().token(&digest).is_some_and(|t| t.revoked)
        })
        .await;
        store
            .revoke_user_tokens("v@x.com", 1234)
            .await
            .expect("revoke all");
        serving(&handle, |s| {
            s.subjects()
                .user_by_email("v@x.com")
                .is_some_and(|u| u.tokens_valid_after == Some(1234))
        })
        .await;
        assert_eq!(store.full_loads(), full_loads, "each change was patched in");
        let patched = handle.load().as_deref().map(|s| s.version());
        assert_eq!(patched, Some(5));

        // A policy that does not compile (written past the checks) is reported, and the
        // last good snapshot keeps serving.
        store
            .update_policy(Box::new(|current, _| {
                let mut broken = current.clone();
                if let Some(p) = broken.permissions.get_mut("read") {
                    p.activities[0].path = "/r(".to_owned();
                }
                Ok(Some(broken))
            }))
            .await
            .expect("written");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let error = status.lock().ok().and_then(|s| s.last_error.clone());
            if error.is_some_and(|e| e.contains("does not compile")) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "failure never reported"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(handle.load().as_deref().map(|s| s.version()), Some(5));
        assert!(
            store.full_loads() > full_loads,
            "a policy change loads everything"
        );
        stop_tx.send(true).expect("stop");
        task.await.expect("reloader stops");
    }
}
