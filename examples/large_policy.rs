//! Load harness for a large policy: 10,000 activities in 1,000 permissions, 200 roles and
//! 100,000 users. Applies it through `Store::apply` (the `policy apply` path), then loads and
//! compiles the snapshot, printing times and the process's peak memory.
//!
//! `cargo run --release --example large_policy -- postgres://postgres@127.0.0.1:5432/test`
//! (a fresh database is created beside the one named, and dropped afterwards), or
//! `-- sqlite` for a temporary SQLite file (`LARGE_POLICY_DB=path` keeps it, to measure a
//! serving sidecar on it).

use std::collections::BTreeMap;
use std::time::Instant;

use portcullis::policy::document::{Activity, Method, PermissionSpec, PolicyDocument, UserSpec};
use portcullis::store::{PolicyStore as _, SqlStore};

pub const PERMISSIONS: usize = 1_000;
pub const ACTIVITIES_PER_PERMISSION: usize = 10;
pub const ROLES: usize = 200;
pub const USERS: usize = 100_000;

/// The large policy, deterministic: permission `svc{p}:use` grants
/// `GET|POST /api/v1/svc{p}/res{a}/[^/]+`; role `role{r}` holds 5 permissions; user `n` holds
/// `role{n % 200}`.
pub fn large_policy() -> PolicyDocument {
    let mut permissions = BTreeMap::new();
    for p in 0..PERMISSIONS {
        let activities = (0..ACTIVITIES_PER_PERMISSION)
            .map(|a| Activity {
                method: if a % 2 == 0 {
                    Method::Get
                } else {
                    Method::Post
                },
                path: format!("/api/v1/svc{p}/res{a}/[^/]+"),
                host: None,
            })
            .collect();
        permissions.insert(
            format!("svc{p}:use"),
            PermissionSpec {
                description: None,
                activities,
            },
        );
    }
    let roles = (0..ROLES)
        .map(|r| {
            (
                format!("role{r}"),
                (0..5)
                    .map(|k| format!("svc{}:use", (r * 5 + k) % PERMISSIONS))
                    .collect(),
            )
        })
        .collect();
    let users = (0..USERS)
        .map(|n| UserSpec {
            email: format!("user{n}@example.com"),
            name: Some(format!("User {n}")),
            disabled: false,
            roles: vec![format!("role{}", n % ROLES)],
        })
        .collect();
    let mut doc = PolicyDocument {
        permissions,
        roles,
        users,
        service_accounts: Vec::new(),
    };
    doc.normalize();
    doc
}

/// Peak resident memory of this process, in MiB (Linux).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The reloader's step after `serving`, and how long it took (ms).
#[allow(dead_code)]
async fn next(
    store: &SqlStore,
    serving: &portcullis::policy::PolicySnapshot,
) -> anyhow::Result<(portcullis::policy::PolicySnapshot, f64)> {
    let started = Instant::now();
    let next = portcullis::app::next_snapshot(store, Some(serving))
        .await
        .map_err(|e| anyhow::anyhow!(e))?
        .ok_or_else(|| anyhow::anyhow!("no new version"))?;
    Ok((next.snapshot, started.elapsed().as_secs_f64() * 1e3))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite".to_owned());
    let dir = tempfile::tempdir()?;
    // LARGE_POLICY_DB=path keeps the SQLite database there, to serve it afterwards.
    let sqlite_path = std::env::var("LARGE_POLICY_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("large.db"));
    let (url, admin) = if target == "sqlite" {
        (format!("sqlite://{}", sqlite_path.display()), None)
    } else {
        let admin = SqlStore::connect(&target, 1).await?;
        admin
            .execute_raw("DROP DATABASE IF EXISTS portcullis_large")
            .await?;
        admin
            .execute_raw("CREATE DATABASE portcullis_large")
            .await?;
        let (base, _) = target
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("url needs a database"))?;
        (format!("{base}/portcullis_large"), Some(admin))
    };
    let store = SqlStore::connect(&url, 2).await?;
    store.migrate().await?;

    let started = Instant::now();
    let doc = large_policy();
    println!("generated: {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let outcome = portcullis::manage::apply(&store, &doc, false, false).await?;
    println!(
        "policy apply ({} changes): {:.2} s",
        outcome.changes.len(),
        started.elapsed().as_secs_f64()
    );
    // 100,000 API tokens, owned by the first user: they are part of every snapshot.
    let tokens = match store.dialect() {
        portcullis::store::Dialect::Sqlite => {
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             INSERT INTO api_tokens (id, digest, user_id, created_at) \
             SELECT 'tok_' || i, printf('%064x', i), (SELECT min(id) FROM users), 0 FROM n"
        }
        portcullis::store::Dialect::Postgres => {
            "INSERT INTO api_tokens (id, digest, user_id, created_at) \
             SELECT 'tok_' || i, lpad(to_hex(i), 64, '0'), (SELECT min(id) FROM users), 0 \
             FROM generate_series(1, 100000) AS i"
        }
    };
    store.execute_raw(tokens).await?;
    let before = peak_rss_mib();
    let started = Instant::now();
    let snapshot = portcullis::manage::load_snapshot(&store).await?;
    println!(
        "snapshot load + compile: {:.2} s ({} activities, {} users, {} api tokens); peak RSS {:.0} MiB (before load {:.0} MiB)",
        started.elapsed().as_secs_f64(),
        snapshot.activity_count(),
        snapshot.subjects().user_count(),
        snapshot.subjects().token_count(),
        peak_rss_mib(),
        before
    );
    // A revocation: what a sidecar does on the announcement (the reloader's own step).
    store.revoke_jti("large-policy-revoked", None).await?;
    let (revoked, ms) = next(&store, &snapshot).await?;
    println!(
        "jti revocation reload (patched): {ms:.1} ms; enforced: {}",
        revoked.subjects().is_revoked("large-policy-revoked")
    );
    let token = store.list_tokens(Some("user0@example.com")).await?;
    store.revoke_token(&token[0].id).await?;
    let (token_revoked, ms) = next(&store, &revoked).await?;
    println!(
        "api token revocation reload (patched; copies the token table): {ms:.1} ms (version {})",
        token_revoked.version()
    );
    // A change written by hand, outside the change log: everything is read, rules compared.
    store
        .execute_raw("UPDATE policy_meta SET version = version + 1")
        .await?;
    let (reread, ms) = next(&store, &token_revoked).await?;
    println!(
        "unlogged change reload (reads everything; rules unchanged, no compile): {ms:.0} ms (version {})",
        reread.version()
    );
    let started = Instant::now();
    let recompiled = portcullis::manage::load_snapshot(&store).await?;
    println!(
        "full reload with compile, for comparison: {:.0} ms (version {})",
        started.elapsed().as_secs_f64() * 1e3,
        recompiled.version()
    );
    let grants = snapshot.grants(true, [], ["role7"]);
    let started = Instant::now();
    let n = 100_000;
    let mut allowed = 0;
    for i in 0..n {
        let path = format!("/api/v1/svc{}/res0/{i}", 35 + i % 5);
        allowed += usize::from(snapshot.evaluate("GET", "h", &path, &grants).is_some());
    }
    println!(
        "evaluate: {:.2} µs per request ({allowed}/{n} allowed)",
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    store.close().await;
    if let Some(admin) = admin {
        admin
            .execute_raw("DROP DATABASE portcullis_large WITH (FORCE)")
            .await?;
    }
    Ok(())
}
