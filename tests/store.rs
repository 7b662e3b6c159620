//! One story, run against every backend: embedded SQLite and PostgreSQL (a private cluster, or
//! `PORTCULLIS_TEST_DATABASE_URL`; each test gets its own database).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use support::pg::{shared_admin_url, PgDatabase};

use portcullis::manage::{self, ApplyOutcome, IssuedToken, ManageError};
use portcullis::policy::PolicyDocument;
use portcullis::store::{MemoryStore, OwnerRef, PolicyStore, SqlStore, REVOCATION_GRACE_SECS};

const EXAMPLE: &str = include_str!("../examples/policy.yaml");

fn doc(yaml: &str) -> PolicyDocument {
    PolicyDocument::from_yaml("test", yaml).expect("valid policy")
}

async fn apply(
    store: &dyn PolicyStore,
    file: &PolicyDocument,
    prune: bool,
    dry_run: bool,
) -> Result<ApplyOutcome, ManageError> {
    manage::apply(store, file, prune, dry_run).await
}

async fn issue(
    store: &dyn PolicyStore,
    owner: OwnerRef<'_>,
    label: &str,
    expires_at: Option<i64>,
    limit: Option<&[String]>,
) -> Result<IssuedToken, ManageError> {
    manage::issue_token(store, owner, label, 1_700_000_000, expires_at, limit).await
}

async fn sqlite() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = SqlStore::connect(&url, 2).await.expect("sqlite connects");
    store.migrate().await.expect("migrates");
    (store, dir)
}

async fn postgres() -> (SqlStore, PgDatabase) {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let store = SqlStore::connect(&db.url, 4).await.expect("connects");
    store.migrate().await.expect("migrates");
    (store, db)
}

async fn policy_story(store: &dyn PolicyStore, sql: Option<&SqlStore>) {
    // A fresh store: version 0, empty policy that still compiles (reserved permissions exist).
    assert_eq!(store.policy_version().await.unwrap(), 0);
    let snapshot = manage::load_snapshot(store)
        .await
        .expect("empty policy compiles");
    assert_eq!(snapshot.version(), 0);

    // Apply, then apply again: the second is a no-op that bumps nothing.
    let example = doc(EXAMPLE);
    let first = apply(store, &example, false, false).await.expect("applies");
    assert!(
        first
            .changes
            .contains(&"+ permission roles:read".to_owned()),
        "{:?}",
        first.changes
    );
    assert_eq!(first.version, 1);
    let again = apply(store, &example, false, false).await.expect("applies");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(again.version, 1);

    // Export is the file, normalized; applying the export changes nothing.
    let (exported, version) = store.load_policy().await.unwrap();
    assert_eq!(version, 1);
    let mut expected = example.clone();
    expected.normalize();
    assert_eq!(exported, expected);
    let yaml = exported.to_yaml().unwrap();
    assert!(apply(store, &doc(&yaml), true, false)
        .await
        .unwrap()
        .changes
        .is_empty());

    // The snapshot decides with what was stored.
    let snapshot = manage::load_snapshot(store).await.unwrap();
    let grants = snapshot.grants(true, [], ["viewer"]);
    assert!(snapshot
        .evaluate("GET", "h", "/api/v1/roles/1/users", &grants)
        .is_some());
    assert!(snapshot
        .evaluate("POST", "h", "/api/v1/roles", &grants)
        .is_none());
    let grants = snapshot.grants(true, [], ["admin"]);
    assert!(snapshot
        .evaluate("PUT", "allocations.example.com", "/api/v1/roles/1", &grants)
        .is_some());

    // Users keep their ids across applies (the JWT `sub` must stay valid).
    let ada = store
        .find_user("Ada@Example.com")
        .await
        .unwrap()
        .expect("ada exists");
    assert_eq!(ada.roles, vec!["admin"]);
    assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
    // A partial file may refer to what is already stored.
    let rename =
        doc("users:\n  - {email: ada@example.com, name: Countess Lovelace, roles: [admin]}\n");
    let out = apply(store, &rename, false, false).await.unwrap();
    assert_eq!(
        out.changes,
        vec!["~ user ada@example.com: name Some(\"Ada Lovelace\") -> Some(\"Countess Lovelace\")"]
    );
    let ada2 = store.find_user("ada@example.com").await.unwrap().unwrap();
    assert_eq!(ada2.id, ada.id);
    assert_eq!(out.version, 2);

    // A dry run reports and writes nothing.
    let narrower = doc("permissions:\n  roles:read:\n    activities: [GET /api/v1/roles]\n");
    let dry = apply(store, &narrower, true, true).await.unwrap();
    assert!(
        dry.changes.contains(&"- permission roles:write".to_owned()),
        "{:?}",
        dry.changes
    );
    assert!(
        dry.changes.contains(&"- user ada@example.com".to_owned()),
        "{:?}",
        dry.changes
    );
    assert_eq!(store.policy_version().await.unwrap(), 2);
    assert_eq!(store.load_policy().await.unwrap().0.permissions.len(), 4);

    // Without --prune, unnamed entries stay and named ones are replaced.
    let out = apply(store, &narrower, false, false).await.unwrap();
    assert_eq!(out.changes, vec!["~ permission roles:read: description Some(\"View roles and their members\") -> None, -activity GET /api/v1/roles/[^/]+/users"]);
    let (now, _) = store.load_policy().await.unwrap();
    assert!(now.permissions.contains_key("roles:write"));
    assert_eq!(now.users.len(), 3);

    // With --prune the store becomes the file; orphaned activities go too.
    apply(store, &narrower, true, false).await.unwrap();
    let (now, version) = store.load_policy().await.unwrap();
    let mut expected = narrower.clone();
    expected.normalize();
    assert_eq!(now, expected);
    assert_eq!(version, 4);
    assert!(store.find_user("ada@example.com").await.unwrap().is_none());

    // Bad input changes nothing: a reference to nothing, a regex that does not compile.
    let dangling = doc("roles:\n  r: [roles:read]\n");
    apply(store, &dangling, false, false)
        .await
        .expect("reference to a stored permission is fine");
    let err = apply(
        store,
        &doc("users:\n  - {email: x@y.z, roles: [r]}\n"),
        true,
        false,
    )
    .await
    .expect_err("prune drops role r");
    assert!(matches!(err, ManageError::Policy(_)), "{err}");
    assert_eq!(store.policy_version().await.unwrap(), 5);

    // Concurrent applies serialize: both land, each with its own version.
    let a = doc("permissions:\n  a:\n    activities: [GET /a]\n");
    let b = doc("permissions:\n  b:\n    activities: [GET /b]\n");
    let (ra, rb) = tokio::join!(
        apply(store, &a, false, false),
        apply(store, &b, false, false)
    );
    let (va, vb) = (
        ra.expect("a applies").version,
        rb.expect("b applies").version,
    );
    assert_ne!(va, vb);
    assert_eq!(va.max(vb), 7);
    let (now, _) = store.load_policy().await.unwrap();
    assert!(now.permissions.contains_key("a") && now.permissions.contains_key("b"));

    // A bad row written behind portcullis' back is reported, not half-loaded.
    let Some(sql) = sql else { return };
    sql.execute_raw("UPDATE activities SET method = 'FETCH' WHERE path = '/a'")
        .await
        .unwrap();
    let err = manage::load_snapshot(store).await.expect_err("bad row");
    assert!(err.to_string().contains("FETCH"), "{err}");
    sql.execute_raw("UPDATE activities SET method = 'GET', path = '/a(' WHERE path = '/a'")
        .await
        .unwrap();
    let err = manage::load_snapshot(store)
        .await
        .expect_err("bad regex row");
    let chain = portcullis::error_chain(&err);
    assert!(chain.contains("does not compile"), "{chain}");
}

#[tokio::test]
async fn policy_story_on_sqlite() {
    let (store, _dir) = sqlite().await;
    policy_story(&store, Some(&store)).await;
}

#[tokio::test]
async fn policy_story_in_memory() {
    policy_story(&MemoryStore::new(), None).await;
}

#[tokio::test]
async fn policy_story_on_postgres() {
    let (store, _db) = postgres().await;
    policy_story(&store, Some(&store)).await;
    store.close().await;
}

/// Prune a user, create another: the new user gets a new id, and the old id is a tombstone the
/// snapshot refuses tokens for.
async fn deleted_user_ids_are_never_reused(store: &dyn PolicyStore) {
    let perms =
        "permissions:\n  p:\n    activities: [GET /x]\nroles:\n  admin: [p]\n  viewer: [p]\n";
    let keep = "  - {email: a@x.com, roles: [viewer]}\n";
    let users = |extra: &str| doc(&format!("{perms}users:\n{keep}{extra}"));
    apply(
        store,
        &users("  - {email: old@x.com, roles: [viewer]}\n"),
        false,
        false,
    )
    .await
    .unwrap();
    let old = store.find_user("old@x.com").await.unwrap().unwrap().id;
    apply(store, &users(""), true, false).await.unwrap();
    assert!(store.find_user("old@x.com").await.unwrap().is_none());
    apply(
        store,
        &users("  - {email: boss@x.com, roles: [admin]}\n"),
        false,
        false,
    )
    .await
    .unwrap();
    let boss = store.find_user("boss@x.com").await.unwrap().unwrap().id;
    assert_ne!(boss, old, "a deleted user's id was given to a new user");
    assert!(boss > old);
    let snapshot = manage::load_snapshot(store).await.unwrap();
    let subjects = snapshot.subjects();
    assert!(subjects.is_deleted(&old.to_string()));
    assert!(!subjects.is_deleted(&boss.to_string()));
    assert!(subjects.user(&boss.to_string()).is_some());
    // Pruning twice leaves one tombstone and no error.
    apply(store, &users(""), true, false).await.unwrap();
    apply(
        store,
        &users("  - {email: old@x.com, roles: [viewer]}\n"),
        false,
        false,
    )
    .await
    .unwrap();
    apply(store, &users(""), true, false).await.unwrap();
    let again = manage::load_snapshot(store).await.unwrap();
    assert!(again.subjects().is_deleted(&old.to_string()));
}

#[tokio::test]
async fn deleted_user_ids_are_never_reused_on_sqlite() {
    let (store, _dir) = sqlite().await;
    deleted_user_ids_are_never_reused(&store).await;
}

#[tokio::test]
async fn deleted_user_ids_are_never_reused_in_memory() {
    deleted_user_ids_are_never_reused(&MemoryStore::new()).await;
}

#[tokio::test]
async fn deleted_user_ids_are_never_reused_on_postgres() {
    let (store, _db) = postgres().await;
    deleted_user_ids_are_never_reused(&store).await;
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let (store, _dir) = sqlite().await;
    store.migrate().await.expect("second migrate is a no-op");
    let (pg, _db) = postgres().await;
    pg.migrate().await.expect("second migrate is a no-op");
    pg.close().await;
}

async fn token_story(store: &dyn PolicyStore, sql: Option<&SqlStore>) {
    use portcullis::identity::{digest, TokenOwner};

    apply(store, &doc(EXAMPLE), false, false).await.unwrap();
    let version = store.policy_version().await.unwrap();

    let user = issue(
        store,
        OwnerRef::User("ada@example.com"),
        "zapier",
        None,
        None,
    )
    .await
    .unwrap();
    let limited = ["roles:read".to_owned()];
    let bot = issue(
        store,
        OwnerRef::ServiceAccount("reporting-bot"),
        "reports",
        Some(4_000_000_000),
        Some(&limited),
    )
    .await
    .unwrap();
    assert_ne!(user.token, bot.token);
    assert_eq!(
        store.policy_version().await.unwrap(),
        version + 2,
        "each issue bumps the version, so sidecars load the new token"
    );
    let version = version + 2;

    // Only the digest is stored: the secret appears in no column.
    if let Some(sql) = sql {
        let leaked = sql
            .execute_raw(&format!(
                "UPDATE api_tokens SET label = label WHERE digest = '{0}' OR id = '{0}' OR label = '{0}' OR permissions = '{0}'",
                user.token
            ))
            .await
            .unwrap();
        assert_eq!(leaked, 0);
    }

    let record = store
        .find_token(&digest(&user.token))
        .await
        .unwrap()
        .expect("found by digest");
    assert_eq!(record.id, user.id);
    assert!(record.digest_matches(&digest(&user.token)));
    assert!(
        matches!(&record.owner, TokenOwner::User { email, roles, .. } if email == "ada@example.com" && roles == &["admin"])
    );
    assert_eq!(record.permissions, None);
    let record = store
        .find_token(&digest(&bot.token))
        .await
        .unwrap()
        .expect("found");
    assert!(
        matches!(&record.owner, TokenOwner::ServiceAccount { name, roles, disabled: false } if name == "reporting-bot" && roles == &["viewer"])
    );
    assert_eq!(record.permissions, Some(limited.to_vec()));
    assert_eq!(record.expires_at, Some(4_000_000_000));
    assert!(store
        .find_token(&digest("pcs_unknown"))
        .await
        .unwrap()
        .is_none());

    // Limits beyond the owner, and unknown owners, are refused.
    let too_much = ["roles:write".to_owned()];
    let err = issue(
        store,
        OwnerRef::ServiceAccount("reporting-bot"),
        "",
        None,
        Some(&too_much),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not hold"), "{err}");
    assert!(
        issue(store, OwnerRef::User("nobody@example.com"), "", None, None)
            .await
            .is_err()
    );
    assert!(
        issue(store, OwnerRef::ServiceAccount("ghost"), "", None, None)
            .await
            .is_err()
    );

    // Listing never shows a secret; last use is recorded in a batch.
    store
        .record_token_use(&[
            (user.id.clone(), 1_800_000_000),
            (bot.id.clone(), 1_800_000_001),
        ])
        .await
        .unwrap();
    let listed = store.list_tokens(Some("ada@example.com")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].label, "zapier");
    assert_eq!(listed[0].last_used_at, Some(1_800_000_000));
    assert_eq!(
        store.list_tokens(Some("reporting-bot")).await.unwrap()[0].owner,
        "service-account:reporting-bot"
    );
    assert_eq!(store.list_tokens(None).await.unwrap().len(), 2);

    // Revoking bumps the version (so every sidecar forgets cached tokens); twice is harmless.
    store.revoke_token(&user.id).await.unwrap();
    assert_eq!(store.policy_version().await.unwrap(), version + 1);
    store.revoke_token(&user.id).await.unwrap();
    assert!(store
        .find_token(&digest(&user.token))
        .await
        .unwrap()
        .expect("still there")
        .revoked_at
        .is_some());
    assert!(store.revoke_token("tok_nope").await.is_err());

    // Disabling the owner shows on the record; pruning the owner deletes its tokens.
    let disable =
        doc("service_accounts:\n  - {name: reporting-bot, disabled: true, roles: [viewer]}\n");
    apply(store, &disable, false, false).await.unwrap();
    let record = store
        .find_token(&digest(&bot.token))
        .await
        .unwrap()
        .expect("found");
    assert!(matches!(
        record.owner,
        TokenOwner::ServiceAccount { disabled: true, .. }
    ));
    let without = doc("permissions:\n  p:\n    activities: [GET /x]\n");
    apply(store, &without, true, false).await.unwrap();
    assert!(store
        .find_token(&digest(&bot.token))
        .await
        .unwrap()
        .is_none());
    assert!(store.list_tokens(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn token_story_on_sqlite() {
    let (store, _dir) = sqlite().await;
    token_story(&store, Some(&store)).await;
}

#[tokio::test]
async fn token_story_in_memory() {
    token_story(&MemoryStore::new(), None).await;
}

#[tokio::test]
async fn token_story_on_postgres() {
    let (store, _db) = postgres().await;
    token_story(&store, Some(&store)).await;
    store.close().await;
}

/// Revoked JWT ids are kept while their token could still be accepted: one whose `exp` is
/// past by more than the grace is neither loaded nor kept (the next revocation deletes it);
/// one still live, one just inside the grace, and one of unknown expiry stay enforced.
async fn revoked_jti_story(store: &dyn PolicyStore) {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let grace = REVOCATION_GRACE_SECS;
    apply(store, &doc(EXAMPLE), false, false).await.unwrap();
    store
        .revoke_jti("long-gone", Some(now - grace - 60))
        .await
        .unwrap();
    let loaded = manage::load_snapshot(store).await.unwrap();
    assert!(!loaded.subjects().is_revoked("long-gone"), "not loaded");
    store.revoke_jti("live", Some(now + 3600)).await.unwrap();
    store.revoke_jti("in-grace", Some(now - 60)).await.unwrap();
    store.revoke_jti("unknown-expiry", None).await.unwrap();
    let snapshot = manage::load_snapshot(store).await.unwrap();
    let subjects = snapshot.subjects();
    for jti in ["live", "in-grace", "unknown-expiry"] {
        assert!(subjects.is_revoked(jti), "{jti} is enforced");
    }
    assert!(!subjects.is_revoked("long-gone"));
    // Revoking again keeps the first expiry (it changes nothing).
    store
        .revoke_jti("live", Some(now - grace - 60))
        .await
        .unwrap();
    let again = manage::load_snapshot(store).await.unwrap();
    assert!(again.subjects().is_revoked("live"));
}

/// Pruned revocations are deleted, not merely filtered: the table holds only what is loaded.
async fn assert_revocation_rows(store: &SqlStore, expected: u64) {
    let rows = store
        .execute_raw("UPDATE revoked_jtis SET revoked_at = revoked_at")
        .await
        .unwrap();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn revoked_jti_story_on_sqlite() {
    let (store, _dir) = sqlite().await;
    revoked_jti_story(&store).await;
    assert_revocation_rows(&store, 3).await;
}

#[tokio::test]
async fn revoked_jti_story_in_memory() {
    revoked_jti_story(&MemoryStore::new()).await;
}

#[tokio::test]
async fn revoked_jti_story_on_postgres() {
    let (store, _db) = postgres().await;
    revoked_jti_story(&store).await;
    assert_revocation_rows(&store, 3).await;
    store.close().await;
}

/// A revoked token's revocation outlives every leeway a sidecar may accept it with.
#[test]
fn revocation_grace_covers_the_longest_leeway() {
    assert_eq!(
        u64::try_from(REVOCATION_GRACE_SECS).unwrap(),
        portcullis::config::MAX_LEEWAY.as_secs()
    );
}

/// The SQLite rebuild that makes user ids AUTOINCREMENT keeps every row that points at a user:
/// roles and API tokens survive the migration, and no cascade fires.
#[tokio::test]
async fn sqlite_user_table_rebuild_keeps_roles_and_tokens() {
    use sqlx::migrate::Migrator;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let mut before = Migrator::new(support::root().join("migrations/sqlite"))
        .await
        .unwrap();
    let all = before.migrations.to_vec();
    before.migrations = all.iter().filter(|m| m.version <= 3).cloned().collect();
    before.run(&pool).await.unwrap();
    for sql in [
        "INSERT INTO users (id, email) VALUES (1, 'a@x.com'), (7, 'b@x.com')",
        "INSERT INTO roles (id, name) VALUES (1, 'viewer')",
        "INSERT INTO user_roles (user_id, role_id) VALUES (1, 1), (7, 1)",
        "INSERT INTO api_tokens (id, digest, user_id, created_at) VALUES ('tok_1', 'd1', 7, 0)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqlStore::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let b = store.find_user("b@x.com").await.unwrap().unwrap();
    assert_eq!((b.id, b.roles.clone()), (7, vec!["viewer".to_owned()]));
    assert_eq!(store.list_tokens(None).await.unwrap().len(), 1);
    // Removing the highest id and adding a user does not hand out 7 again.
    apply(
        &store,
        &doc("roles:\n  viewer: []\nusers:\n  - {email: a@x.com, roles: [viewer]}\n"),
        true,
        false,
    )
    .await
    .unwrap();
    apply(
        &store,
        &doc("roles:\n  viewer: []\nusers:\n  - {email: c@x.com, roles: [viewer]}\n"),
        false,
        false,
    )
    .await
    .unwrap();
    assert!(store.find_user("c@x.com").await.unwrap().unwrap().id > 7);
}

/// SQLite: a transaction that reads before it writes (issuing a token looks its owner up)
/// waits for another connection's writes (a sidecar's last-used writer) instead of failing
/// with "database is locked" when that writer commits between its read and its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_on_two_connections_wait_for_each_other() {
    let (cli, dir) = sqlite().await;
    apply(
        &cli,
        &doc("users:\n  - {email: ada@example.com, roles: []}\n"),
        false,
        false,
    )
    .await
    .unwrap();
    let first = issue(&cli, OwnerRef::User("ada@example.com"), "first", None, None)
        .await
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let sidecar = SqlStore::connect(&url, 2).await.expect("sqlite connects");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let id = first.id.clone();
        tokio::spawn(async move {
            let mut at = 1_800_000_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                at += 1;
                sidecar
                    .record_token_use(&[(id.clone(), at)])
                    .await
                    .expect("the last-used write waits, never fails");
            }
        })
    };
    for n in 0..100 {
        issue(
            &cli,
            OwnerRef::User("ada@example.com"),
            &format!("t{n}"),
            None,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("token {n} beside a busy writer: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}
