//! Housekeeping (`SqlStore::collect_garbage`, `portcullis gc`, the sidecars' schedule) on
//! SQLite and PostgreSQL: what a round removes and keeps, that it bumps no version, that tables
//! stay bounded by their live rows over a simulated year, and that one leader at a time does
//! the work (the PostgreSQL advisory lock), in process and between two real sidecars.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use portcullis::identity::digest;
use portcullis::manage;
use portcullis::policy::PolicyDocument;
use portcullis::store::{
    AccountLink, GcOutcome, GcTable, LinkOutcome, LoginStore, OwnerRef, PolicyStore, Removed,
    SqlStore, GC_LOCK_KEY, REVOCATION_GRACE_SECS,
};
use sqlx::Row as _;
use support::pg::{shared_admin_url, PgDatabase};

const GRACE: i64 = REVOCATION_GRACE_SECS;
const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
users:\n  - {email: ada@example.com, roles: [viewer]}\n\
service_accounts:\n  - {name: ci, roles: [viewer]}\n";

fn unix_now() -> i64 {
    i64::try_from(support::unix_now()).unwrap()
}

async fn sqlite() -> (SqlStore, sqlx::AnyPool, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gc.db").display());
    // One connection, so the pragma below holds for every statement of the test.
    let store = SqlStore::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    // A simulated year commits tens of thousands of times: no fsync per commit in a test.
    store.execute_raw("PRAGMA synchronous=OFF").await.unwrap();
    let pool = sqlx::AnyPool::connect(&format!("{url}?mode=rw"))
        .await
        .unwrap();
    (store, pool, dir)
}

async fn postgres() -> (SqlStore, sqlx::AnyPool, PgDatabase) {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let store = SqlStore::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    (store, pool, db)
}

async fn count(pool: &sqlx::AnyPool, table: &str) -> i64 {
    // Table names come from the test's own constants, never from data.
    let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
    sqlx::query(&sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn token_ids(store: &SqlStore) -> Vec<String> {
    let tokens = store.list_tokens(None).await.unwrap();
    tokens.into_iter().map(|t| t.id).collect()
}

fn removed(outcome: GcOutcome) -> Removed {
    match outcome {
        GcOutcome::Done(r) => r,
        GcOutcome::Skipped => panic!("skipped with nobody else running"),
    }
}

async fn user_id(store: &SqlStore, email: &'static str, subject: &'static str, at: i64) -> i64 {
    let link = AccountLink {
        provider: "https://accounts.example.com",
        subject,
        email,
        name: None,
    };
    match store.link_account(&link, &[], at).await.unwrap() {
        LinkOutcome::User { user, .. } => user.id,
        LinkOutcome::EmailLinkedElsewhere | LinkOutcome::EmailTakenByAnother => {
            panic!("not linked")
        }
    }
}

/// What one round removes and what it keeps, and that it bumps no version.
async fn what_a_round_removes(store: &SqlStore, pool: &sqlx::AnyPool) {
    let doc = PolicyDocument::from_yaml("t", POLICY).unwrap();
    manage::apply(store, &doc, false, false).await.unwrap();
    let now = unix_now();
    let ada = OwnerRef::User("ada@example.com");
    let live = manage::issue_token(store, ada, "live", now, None, None)
        .await
        .unwrap();
    let expiring = manage::issue_token(store, ada, "soon", now, Some(now + 600), None)
        .await
        .unwrap();
    // Expired within the grace (a sidecar's leeway could still reach it), and long before.
    let _recent = manage::issue_token(store, ada, "recent", now - 900, Some(now - 60), None)
        .await
        .unwrap();
    let expired = manage::issue_token(
        store,
        OwnerRef::ServiceAccount("ci"),
        "old",
        now - 9000,
        Some(now - GRACE - 1),
        None,
    )
    .await
    .unwrap();
    let revoked = manage::issue_token(store, ada, "revoked", now, None, None)
        .await
        .unwrap();
    store.revoke_token(&revoked.id).await.unwrap();
    store.revoke_jti("soon", Some(now + 600)).await.unwrap();
    store.revoke_jti("forever", None).await.unwrap();

    // Sessions: one live with a rotated refresh family and a live handoff code, one revoked
    // now, one long expired; a spent code and an expired one.
    let uid = user_id(store, "ada@example.com", "ada", now).await;
    let (r1, r2, r3) = (digest("r1"), digest("r2"), digest("r3"));
    store
        .create_session("live", uid, now, now + 600, Some(&r1))
        .await
        .unwrap();
    store.rotate_refresh(&r1, &r2, now).await.unwrap();
    store
        .create_session("ended", uid, now - 60, now + 3600, Some(&r3))
        .await
        .unwrap();
    store
        .create_session("expired", uid, now - 9000, now - GRACE - 1, None)
        .await
        .unwrap();
    let (h_live, h_spent, h_old) = (digest("h1"), digest("h2"), digest("h3"));
    store
        .insert_handoff(&h_live, "live", "https://a.example", now + 60)
        .await
        .unwrap();
    store
        .insert_handoff(&h_spent, "live", "https://a.example", now + 60)
        .await
        .unwrap();
    assert!(store.take_handoff(&h_spent, now).await.unwrap().is_some());
    store
        .insert_handoff(&h_old, "live", "https://a.example", now - GRACE - 1)
        .await
        .unwrap();
    assert!(store.revoke_session("ended", "logout", now).await.unwrap());

    let version = store.policy_version().await.unwrap();
    let first = removed(store.collect_garbage(now).await.unwrap());
    let expect = |t: GcTable| first.get(t);
    assert_eq!(expect(GcTable::ApiTokens), 1, "the long-expired token");
    assert_eq!(expect(GcTable::HandoffCodes), 2, "spent and expired codes");
    assert_eq!(
        expect(GcTable::RefreshTokens),
        1,
        "the revoked session's family"
    );
    assert_eq!(expect(GcTable::Sessions), 1, "the long-expired session");
    assert_eq!(expect(GcTable::RevokedJtis), 0);
    assert_eq!(
        store.policy_version().await.unwrap(),
        version,
        "housekeeping announces nothing"
    );
    let ids = token_ids(store).await;
    assert!(!ids.contains(&expired.id), "{ids:?}");
    assert_eq!(ids.len(), 4, "live, expiring, recent, revoked: {ids:?}");
    // The live session keeps its whole family: a reused refresh token is still recognised.
    assert_eq!(count(pool, "refresh_tokens").await, 2);
    assert!(store.session("live").await.unwrap().is_some());

    // Past the grace, the revocations and expiries that could still matter no longer do.
    let later = now + 600 + GRACE + 1;
    let second = removed(store.collect_garbage(later).await.unwrap());
    assert_eq!(
        second.get(GcTable::ApiTokens),
        3,
        "recent, revoked, expiring"
    );
    assert_eq!(
        second.get(GcTable::RevokedJtis),
        1,
        "`soon`; unknown expiry stays"
    );
    // `ended` (revoked) and `live` (expired by now) with their refresh tokens and codes.
    assert_eq!(second.get(GcTable::Sessions), 2);
    assert_eq!(second.get(GcTable::RefreshTokens), 2);
    assert_eq!(second.get(GcTable::HandoffCodes), 1);
    let left = token_ids(store).await;
    assert_eq!(left, vec![live.id.clone()]);
    assert!(!left.contains(&expiring.id));
    assert_eq!(
        count(pool, "revoked_jtis").await,
        2,
        "forever, and session `ended`'s id"
    );
    assert_eq!(store.policy_version().await.unwrap(), version);

    // A removed revoked token is not back: the snapshot does not hold it, and an unknown
    // token is refused (tests/gc.rs's sidecars check the answer itself).
    let snapshot = manage::load_snapshot(store).await.unwrap();
    assert!(snapshot.subjects().token(&digest(&revoked.token)).is_none());
    assert!(snapshot.subjects().token(&digest(&live.token)).is_some());
    // A round with nothing left removes nothing.
    assert_eq!(
        removed(store.collect_garbage(later).await.unwrap()).total(),
        0
    );
}

#[tokio::test]
async fn a_round_removes_what_can_no_longer_matter_on_sqlite() {
    let (store, pool, _dir) = sqlite().await;
    what_a_round_removes(&store, &pool).await;
}

#[tokio::test]
async fn a_round_removes_what_can_no_longer_matter_on_postgres() {
    let (store, pool, _db) = postgres().await;
    what_a_round_removes(&store, &pool).await;
}

#[path = "gc/year.rs"]
mod year;

#[tokio::test]
async fn tables_stay_bounded_under_a_year_of_use_on_sqlite() {
    let (store, pool, _dir) = sqlite().await;
    year::simulate(&store, &pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_stay_bounded_under_a_year_of_use_on_postgres() {
    let (store, pool, _db) = postgres().await;
    year::simulate(&store, &pool).await;
}

/// Holds the housekeeping lock from the test's own connection while a round is tried.
async fn holding_the_lock(pool: &sqlx::AnyPool) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock($1)) AS locked")
        .bind(GC_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Two stores on one PostgreSQL database race for a round: while one holds the lock (its
/// delete held up by a row lock the test takes), the other skips; the first removes every
/// row. With the lock held elsewhere, both skip and nothing is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_on_postgres() {
    let (a, pool, db) = postgres().await;
    let b = SqlStore::connect(&db.url, 2).await.unwrap();
    let doc = PolicyDocument::from_yaml("t", POLICY).unwrap();
    manage::apply(&a, &doc, false, false).await.unwrap();
    let now = unix_now();
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = manage::issue_token(
            &a,
            OwnerRef::User("ada@example.com"),
            "",
            now - 9000,
            Some(now - GRACE - 1 - i),
            None,
        )
        .await
        .unwrap();
        ids.push(t.id);
    }

    let held = holding_the_lock(&pool).await;
    assert_eq!(a.collect_garbage(now).await.unwrap(), GcOutcome::Skipped);
    assert_eq!(b.collect_garbage(now).await.unwrap(), GcOutcome::Skipped);
    assert_eq!(count(&pool, "api_tokens").await, 5);
    held.rollback().await.unwrap();

    // Hold one doomed row, so `a`'s round stays in flight with the lock.
    let mut row = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM api_tokens WHERE id = $1 FOR UPDATE")
        .bind(&ids[0])
        .fetch_one(&mut *row)
        .await
        .unwrap();
    let leader = tokio::spawn(async move { a.collect_garbage(now).await.unwrap() });
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(
        &pool,
        "pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "a never took the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.collect_garbage(now).await.unwrap(), GcOutcome::Skipped);
    assert!(!leader.is_finished());
    row.commit().await.unwrap();
    let done = removed(leader.await.unwrap());
    assert_eq!(
        done.get(GcTable::ApiTokens),
        5,
        "the leader did the whole round"
    );
    assert_eq!(count(&pool, "api_tokens").await, 0);
    assert_eq!(removed(b.collect_garbage(now).await.unwrap()).total(), 0);
}

#[path = "gc/sidecars.rs"]
mod sidecars;
