use super::*;
use crate::identity::{ApiTokenSettings, ClaimRules, Identifier, JwtSettings, KeySet};
use crate::manage;
use crate::policy::PolicyDocument;
use crate::store::MemoryStore;
use arc_swap::ArcSwapOption;

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
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
async fn serving(handle: &SnapshotHandle, until: impl Fn(&crate::policy::PolicySnapshot) -> bool) {
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
    let writer = crate::app::jobs::usage::write_token_use(shared, health, rx, every, stop_rx);
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
