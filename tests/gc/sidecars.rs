//! Two real sidecars on one PostgreSQL database, each running housekeeping every second: while
//! the test holds the advisory lock both skip every round and remove nothing; once it lets go,
//! the rows go, counted once across both `/metrics`; `portcullis gc` reports the same way; and
//! the revoked token whose row was removed is still refused, before and after a full reload.

use super::*;
use support::{cli, cli_ok, prepared_config, request, Portcullis};

use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

fn admin_port(p: &Portcullis) -> u16 {
    p.admin_addr().port()
}

/// One sample of a sidecar's `/metrics` (0 when absent).
async fn metric(port: u16, sample: &str) -> f64 {
    let body = request(port, "GET", "/metrics", &[]).await.unwrap().body;
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The HTTP status a sidecar's Check answers with for an API token (200: allowed).
async fn answer(p: &Portcullis, token: &str) -> u16 {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let request = support::check_request(
        "GET",
        "app.example.com",
        "/api/v1/roles",
        &[("x-api-token", token)],
    );
    let res = AuthorizationClient::new(channel)
        .check(request)
        .await
        .unwrap()
        .into_inner();
    match res.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.map(|s| s.code as u16).unwrap_or(0),
        _ => 0,
    }
}

const SKIPPED: &str = r#"portcullis_gc_runs_total{outcome="skipped"}"#;
const DONE: &str = r#"portcullis_gc_runs_total{outcome="done"}"#;
const REMOVED_TOKENS: &str = r#"portcullis_gc_removed_total{table="api_tokens"}"#;
const REMOVED_JTIS: &str = r#"portcullis_gc_removed_total{table="revoked_jtis"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_take_turns_and_a_removed_token_stays_refused() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = prepared_config(dir.path(), &db.url, "200ms", "token");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "reload_interval: 200ms",
        "reload_interval: 200ms\n  gc_interval: 1s",
    );
    std::fs::write(&config, text).unwrap();
    let token = cli_ok(&config, &["token", "issue", "--user", "grace@example.com"]);
    let token = token.trim().to_owned();
    let id = cli_ok(&config, &["token", "list", "--owner", "grace@example.com"])
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    cli_ok(&config, &["token", "revoke", &id]);
    let kept = cli_ok(&config, &["token", "issue", "--user", "grace@example.com"]);
    let kept = kept.trim().to_owned();
    // Revoked (and JWT revocations expired) long enough ago for housekeeping to take them.
    let store = SqlStore::connect(&db.url, 2).await.unwrap();
    store
        .execute_raw("UPDATE api_tokens SET revoked_at = 1 WHERE revoked_at IS NOT NULL")
        .await
        .unwrap();
    for i in 0..3 {
        store
            .revoke_jti(&format!("old-{i}"), Some(unix_now() + 3600))
            .await
            .unwrap();
    }
    store
        .execute_raw("UPDATE revoked_jtis SET expires_at = 2")
        .await
        .unwrap();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    assert_eq!(count(&pool, "api_tokens").await, 2);

    let held = holding_the_lock(&pool).await;
    let sidecars = [
        Portcullis::start(&config).await,
        Portcullis::start(&config).await,
    ];
    let ports: Vec<u16> = sidecars.iter().map(admin_port).collect();
    for p in &sidecars {
        assert_eq!(answer(p, &token).await, 401, "revoked");
        assert_eq!(answer(p, &kept).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        while metric(*port, SKIPPED).await < 2.0 {
            assert!(Instant::now() < deadline, "rounds never skipped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(metric(*port, DONE).await, 0.0);
        assert_eq!(metric(*port, REMOVED_TOKENS).await, 0.0);
    }
    assert_eq!(
        count(&pool, "api_tokens").await,
        2,
        "nothing removed under the lock"
    );
    assert_eq!(count(&pool, "revoked_jtis").await, 3);
    // `portcullis gc` defers to the holder too.
    let (code, out, _) = cli(&config, &["gc"]);
    assert_eq!((code, out.starts_with("skipped")), (0, true), "{out}");
    held.rollback().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&pool, "api_tokens").await != 1 || count(&pool, "revoked_jtis").await != 0 {
        assert!(Instant::now() < deadline, "housekeeping never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each sidecar has run a round since (done or skipped); every row was removed once.
    let mut runs = Vec::new();
    for port in &ports {
        runs.push(metric(*port, DONE).await + metric(*port, SKIPPED).await);
    }
    for (port, before) in ports.iter().zip(&runs) {
        while metric(*port, DONE).await + metric(*port, SKIPPED).await < before + 1.0 {
            assert!(Instant::now() < deadline, "housekeeping stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (mut tokens, mut jtis, mut done) = (0.0, 0.0, 0.0);
    for port in &ports {
        tokens += metric(*port, REMOVED_TOKENS).await;
        jtis += metric(*port, REMOVED_JTIS).await;
        done += metric(*port, DONE).await;
    }
    assert_eq!(
        (tokens, jtis),
        (1.0, 3.0),
        "each row removed once, by one leader"
    );
    assert!(done >= 1.0);
    // By hand: nothing is left, or a sidecar's round holds the lock at that moment.
    let (code, out, _) = cli(&config, &["gc"]);
    assert_eq!(code, 0, "{out}");
    if !out.starts_with("skipped") {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines.iter().all(|l| l.ends_with(" 0 removed")), "{out}");
        assert!(lines[4].starts_with("api_tokens"), "{out}");
    }

    // The removed revoked token is refused by both sidecars, also after a full reload.
    for p in &sidecars {
        assert_eq!(answer(p, &token).await, 401);
    }
    let policy = support::root().join("examples/policy.yaml");
    let changed =
        std::fs::read_to_string(&policy).unwrap() + "\n# a change that reloads everything\n";
    let changed_path = dir.path().join("changed.yaml");
    std::fs::write(&changed_path, changed.replace("View roles", "See roles")).unwrap();
    cli_ok(
        &config,
        &["policy", "apply", changed_path.to_str().unwrap()],
    );
    let version = serde_json::Value::from(store.policy_version().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        loop {
            let status = request(*port, "GET", "/status", &[]).await.unwrap().json();
            if status["policy_version"] == version {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the change never reached a sidecar"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for p in &sidecars {
        let log = p.proc.log_text();
        assert_eq!(
            answer(p, &token).await,
            401,
            "not back after a reload:\n{log}"
        );
        assert_eq!(answer(p, &kept).await, 200, "{log}");
    }
}
