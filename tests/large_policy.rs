//! A large policy (10,000 activities, 100,000 users) applies and loads on PostgreSQL, and
//! decides correctly. Timings and memory are measured by `examples/large_policy.rs` and
//! recorded in BENCHMARKS.md; this test asserts behaviour only.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

#[path = "../examples/large_policy.rs"]
#[allow(dead_code)]
mod large;

use portcullis::store::{PolicyStore as _, SqlStore};
use support::pg::{shared_admin_url, PgDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_activities_and_a_hundred_thousand_users_load() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let store = SqlStore::connect(&db.url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let doc = large::large_policy();
    let outcome = portcullis::manage::apply(&store, &doc, false, false)
        .await
        .expect("applies");
    assert_eq!(
        outcome.changes.len(),
        large::PERMISSIONS + large::ROLES + large::USERS
    );
    // Applying it again changes nothing.
    assert!(portcullis::manage::apply(&store, &doc, false, false)
        .await
        .unwrap()
        .changes
        .is_empty());

    let snapshot = portcullis::manage::load_snapshot(&store)
        .await
        .expect("loads and compiles");
    assert_eq!(
        snapshot.activity_count(),
        large::PERMISSIONS * large::ACTIVITIES_PER_PERMISSION
    );
    assert_eq!(snapshot.subjects().user_count(), large::USERS);

    // role7 holds svc35..svc39:use; user 7 (and every 200th after) holds role7.
    let user = store
        .find_user("user207@example.com")
        .await
        .unwrap()
        .expect("user");
    assert_eq!(user.roles, vec!["role7"]);
    let state = snapshot
        .subjects()
        .user(&user.id.to_string())
        .expect("in the snapshot");
    let grants = snapshot.grants(true, [], state.roles.iter().map(String::as_str));
    let decide = |method: &str, path: &str| {
        snapshot
            .evaluate(method, "h", path, &grants)
            .map(|m| m.permission.to_owned())
    };
    assert_eq!(
        decide("GET", "/api/v1/svc35/res0/x").as_deref(),
        Some("svc35:use")
    );
    assert_eq!(
        decide("POST", "/api/v1/svc39/res9/x").as_deref(),
        Some("svc39:use")
    );
    assert_eq!(
        decide("POST", "/api/v1/svc39/res8/x"),
        None,
        "res8 is GET only"
    );
    assert_eq!(
        decide("GET", "/api/v1/svc40/res0/x"),
        None,
        "svc40 belongs to role8"
    );
    assert_eq!(decide("GET", "/api/v1/svc35/res0/x/y"), None, "anchored");
    store.close().await;
}
