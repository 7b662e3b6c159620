//! PostgreSQL in production: several sidecars on one database see every change within a
//! second (LISTEN/NOTIFY; polling is set far slower so only notifications can pass), and a
//! database outage under load fails no decision.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use support::pg::{shared_admin_url, PgCluster, PgDatabase};
use support::{cli, cli_ok, prepared_config, write_config_for, Portcullis};
use tonic::transport::Channel;

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    support::check_request(method, "app.example.com", path, headers)
}

/// The HTTP status a Check answers with (200 for an allow).
async fn status(
    client: &mut AuthorizationClient<Channel>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> u16 {
    support::check_status(client, request(method, path, headers)).await
}

async fn client(p: &Portcullis) -> AuthorizationClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AuthorizationClient::new(channel)
}

/// Both sidecars answer `expected` within one second of the change.
async fn both_within_a_second(
    clients: &mut [AuthorizationClient<Channel>; 2],
    what: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    expected: u16,
) {
    let started = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        loop {
            let got = status(c, method, path, headers).await;
            if got == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what}: sidecar {i} still answers {got} after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn policy_file(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_on_one_database_see_every_change_within_a_second() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let dir = tempfile::tempdir().unwrap();
    // Polling every 30 s: only LISTEN/NOTIFY can make the one-second bound.
    let config = prepared_config(dir.path(), &db.url, "30s", "store");
    let a = Portcullis::start(&config).await;
    let b = Portcullis::start(&config).await;
    let mut clients = [client(&a).await, client(&b).await];

    let ada = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "ada@example.com"]).trim()
    );
    let grace = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "grace@example.com"]).trim()
    );
    for c in clients.iter_mut() {
        assert_eq!(
            status(c, "GET", "/api/v1/reports", &[("authorization", &ada)]).await,
            403
        );
        assert_eq!(
            status(c, "GET", "/api/v1/roles", &[("authorization", &grace)]).await,
            200
        );
    }

    // A new endpoint's activity.
    let reports = policy_file(dir.path(), "reports.yaml", "permissions:\n  roles:read:\n    description: View roles and their members\n    activities: [GET /api/v1/roles, \"GET /api/v1/roles/[^/]+/users\", GET /api/v1/reports]\n");
    cli_ok(&config, &["policy", "apply", &reports]);
    both_within_a_second(
        &mut clients,
        "policy apply",
        "GET",
        "/api/v1/reports",
        &[("authorization", &ada)],
        200,
    )
    .await;

    // A role removed (store mode): Grace's token still says viewer; the store no longer does.
    let demote = policy_file(
        dir.path(),
        "demote.yaml",
        "users:\n  - {email: grace@example.com, name: Grace Hopper, roles: []}\n",
    );
    cli_ok(&config, &["policy", "apply", &demote]);
    both_within_a_second(
        &mut clients,
        "role removal",
        "GET",
        "/api/v1/roles",
        &[("authorization", &grace)],
        403,
    )
    .await;

    // A user disabled: 401 whatever the token says.
    let disable = policy_file(dir.path(), "disable.yaml", "users:\n  - {email: ada@example.com, name: Ada Lovelace, disabled: true, roles: [admin]}\n");
    cli_ok(&config, &["policy", "apply", &disable]);
    both_within_a_second(
        &mut clients,
        "user disable",
        "GET",
        "/api/v1/roles",
        &[("authorization", &ada)],
        401,
    )
    .await;

    // An API token revoked, after both sidecars have it cached.
    let (code, token, err) = cli(
        &config,
        &["token", "issue", "--service-account", "reporting-bot"],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap()
        .to_owned();
    // Issuing is announced like any change: both sidecars load the new token within 1 s.
    both_within_a_second(
        &mut clients,
        "token issue",
        "GET",
        "/api/v1/roles",
        &[("x-api-token", &token)],
        200,
    )
    .await;
    cli_ok(&config, &["token", "revoke", &id]);
    both_within_a_second(
        &mut clients,
        "token revoke",
        "GET",
        "/api/v1/roles",
        &[("x-api-token", &token)],
        401,
    )
    .await;

    // A JWT revoked by jti, and every JWT of a user (logout everywhere).
    let alan_token = cli_ok(&config, &["jwt", "mint", "--user", "alan@example.com"])
        .trim()
        .to_owned();
    let alan = format!("Bearer {alan_token}");
    both_within_a_second(
        &mut clients,
        "alan allowed",
        "GET",
        "/api/v1/me",
        &[("authorization", &alan)],
        200,
    )
    .await;
    let claims: serde_json::Value = {
        use base64::Engine as _;
        let payload = alan_token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    cli_ok(&config, &["jwt", "revoke", claims["jti"].as_str().unwrap()]);
    both_within_a_second(
        &mut clients,
        "jti revoke",
        "GET",
        "/api/v1/me",
        &[("authorization", &alan)],
        401,
    )
    .await;
    let grace_again = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "grace@example.com"]).trim()
    );
    both_within_a_second(
        &mut clients,
        "grace allowed",
        "GET",
        "/api/v1/me",
        &[("authorization", &grace_again)],
        200,
    )
    .await;
    // iat has one-second resolution: revoke only once the clock has passed the token's iat.
    let minted = support::unix_now();
    while support::unix_now() <= minted {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cli_ok(&config, &["jwt", "revoke", "--user", "grace@example.com"]);
    both_within_a_second(
        &mut clients,
        "user revoke",
        "GET",
        "/api/v1/me",
        &[("authorization", &grace_again)],
        401,
    )
    .await;

    let alan_again = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "alan@example.com"]).trim()
    );
    // A bad row written behind portcullis' back: the last good snapshot keeps serving, and
    // the failure is visible in the status.
    let store = portcullis::store::SqlStore::connect(&db.url, 1)
        .await
        .unwrap();
    let before = portcullis::cli::fetch_status(a.admin_addr()).await.unwrap();
    store
        .execute_raw(
            "UPDATE activities SET path = '/api/v1/reports(' WHERE path = '/api/v1/reports'",
        )
        .await
        .unwrap();
    store
        .execute_raw("UPDATE policy_meta SET version = version + 1")
        .await
        .unwrap();
    store
        .execute_raw("NOTIFY portcullis_policy, 'bad'")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = portcullis::cli::fetch_status(a.admin_addr()).await.unwrap();
        if now["last_error"].is_string() {
            assert!(
                now["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("does not compile"),
                "{now}"
            );
            assert_eq!(
                now["policy_version"], before["policy_version"],
                "the last good snapshot serves"
            );
            assert_eq!(now["serving"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad row was never reported: {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Building on a store that no longer compiles is refused cleanly.
    let enable = policy_file(
        dir.path(),
        "enable.yaml",
        "users:\n  - {email: ada@example.com, name: Ada Lovelace, roles: [admin]}\n",
    );
    let (code, _, err) = cli(&config, &["policy", "apply", &enable]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("does not compile"), "{err}");
    for c in clients.iter_mut() {
        assert_eq!(
            status(c, "GET", "/api/v1/me", &[("authorization", &alan_again)]).await,
            200
        );
    }
    let (code, out, _) = cli(&config, &["status", "--admin", &b.admin_addr().to_string()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"snapshot_age_seconds\""), "{out}");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_fails_no_decision() {
    let cluster = PgCluster::start();
    let db = PgDatabase::create(&cluster.admin_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = prepared_config(dir.path(), &db.url, "200ms", "token");
    let (code, unused_token, err) =
        cli(&config, &["token", "issue", "--user", "grace@example.com"]);
    assert_eq!(code, 0, "{err}");
    let server = Portcullis::start(&config).await;
    let ada = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "ada@example.com"]).trim()
    );

    // A bounded loop of checks with known answers, counting anything else.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, done, wrong, ada) = (stop.clone(), done.clone(), wrong.clone(), ada.clone());
        let mut c = client(&server).await;
        load.push(tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                let cases = [
                    (
                        status(&mut c, "GET", "/api/v1/roles", &[("authorization", &ada)]).await,
                        200,
                    ),
                    (
                        status(&mut c, "POST", "/api/v1/roles", &[("authorization", &ada)]).await,
                        200,
                    ),
                    (status(&mut c, "GET", "/api/v1/roles", &[]).await, 401),
                    (status(&mut c, "GET", "/healthz", &[]).await, 200),
                    (
                        status(
                            &mut c,
                            "GET",
                            "/api/v1/roles/../x",
                            &[("authorization", &ada)],
                        )
                        .await,
                        403,
                    ),
                ];
                for (got, want) in cases {
                    done.fetch_add(1, Ordering::Relaxed);
                    if got != want {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    // The load runs (and is right) before the outage starts.
    while done.load(Ordering::Relaxed) < 100 {
        assert_eq!(wrong.load(Ordering::Relaxed), 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.stop();
    let outage = Instant::now();
    // While the database is down: an API token issued before and never used until now is
    // answered from the snapshot (no store on the request path), and an unknown one refused.
    let mut c = client(&server).await;
    assert_eq!(
        status(
            &mut c,
            "GET",
            "/api/v1/roles",
            &[("x-api-token", unused_token.trim())]
        )
        .await,
        200
    );
    let unknown = portcullis::identity::api_token::generate();
    assert_eq!(
        status(&mut c, "GET", "/api/v1/roles", &[("x-api-token", &unknown)]).await,
        401
    );
    // A sidecar started during the outage stays unready (Envoy fails closed) until it loads.
    let late_dir = tempfile::tempdir().unwrap();
    let late_config = write_config_for(late_dir.path(), &db.url, "200ms", "token", "");
    let late = support::Proc::spawn_portcullis(&late_config);
    let late_addr = late.wait_for_log("serving ext_authz");
    // Once it has found the store down, and the load has run through the outage for a while
    // (counted in decisions, not seconds):
    late.wait_for_log("policy store unreachable");
    let before = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < before + 2_000 {
        assert!(
            outage.elapsed() < Duration::from_secs(60),
            "the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = Portcullis::from_running(late, &late_addr, &late_config);
    assert_eq!(
        late.health().await,
        Some(2),
        "NOT_SERVING while the database is down"
    );
    cluster.resume();
    late.wait_serving().await;

    // A change made after the restart is picked up.
    let reports = policy_file(dir.path(), "reports.yaml", "permissions:\n  roles:read:\n    description: View roles and their members\n    activities: [GET /api/v1/roles, \"GET /api/v1/roles/[^/]+/users\", GET /api/v1/reports]\n");
    cli_ok(&config, &["policy", "apply", &reports]);
    let grace = format!(
        "Bearer {}",
        cli_ok(&config, &["jwt", "mint", "--user", "grace@example.com"]).trim()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(
        &mut c,
        "GET",
        "/api/v1/reports",
        &[("authorization", &grace)],
    )
    .await
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "change after the restart never picked up:\n{}",
            server.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (done, wrong) = (done.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    assert!(done > 500, "only {done} checks ran");
    assert_eq!(wrong, 0, "{wrong} of {done} checks were wrong or failed");
    // The outage is logged once, not once per attempt.
    let log = server.proc.log_text();
    assert_eq!(log.matches("policy store unreachable").count(), 1, "{log}");
    assert!(log.contains("policy store reachable again"), "{log}");
    let sqlx: Vec<&str> = log.lines().filter(|l| l.contains(" sqlx")).collect();
    assert!(sqlx.is_empty(), "one outage, one line: {sqlx:#?}");
}

/// `/status` while the database goes away and comes back, on a sidecar that polls once an
/// hour: losing the LISTEN connection is what notices, within seconds. The outage and its
/// end are each logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_listen_connection_flips_store_reachable_and_back() {
    let cluster = PgCluster::start();
    let db = PgDatabase::create(&cluster.admin_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = prepared_config(dir.path(), &db.url, "1h", "token");
    let server = Portcullis::start(&config).await;
    let admin = server.admin_addr();
    // Waits for `store_reachable` to be `want`; the status then.
    let reachable = |want: bool, within: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(within);
        loop {
            let status = portcullis::cli::fetch_status(admin).await.unwrap();
            if status["store_reachable"] == want {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not {want} in {within} s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    reachable(true, 15).await;
    cluster.stop();
    let status = reachable(false, 15).await;
    assert!(status["last_error"].is_string(), "{status}");
    assert_eq!(status["serving"], true, "the last snapshot keeps serving");
    cluster.resume();
    let status = reachable(true, 20).await;
    assert!(status["last_error"].is_null(), "{status}");
    let log = server.proc.log_text();
    assert_eq!(log.matches("policy store unreachable").count(), 1, "{log}");
    assert_eq!(
        log.matches("policy store reachable again").count(),
        1,
        "{log}"
    );
    // One outage, one line: none of sqlx's own (its pool logs each dropped connection).
    let sqlx: Vec<&str> = log.lines().filter(|l| l.contains(" sqlx")).collect();
    assert!(sqlx.is_empty(), "{sqlx:#?}");
}
