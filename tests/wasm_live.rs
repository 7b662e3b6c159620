//! The in-process filter in real Envoy (`envoy/envoy-wasm.yaml`), against a running sidecar:
//! what the bundle carries (never a secret), how fast a change reaches the filter (measured
//! and printed: a revocation, a policy apply, a user disable), and failing closed (503 before
//! the first bundle; the last bundle kept while the sidecar is gone, up to `max_age`, then 503).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::corpus_case;
use crate::recording;
use crate::support;
use crate::wasm_filter;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use corpus_case::issue_api_token;
use support::{Envoy, Response};

/// How long a change may take to reach the filter before the test calls it lost (a
/// correctness bound, far above the ~1 s the mode promises; the measured time is printed).
const LOST_AFTER: Duration = Duration::from_secs(10);

fn reason(r: &Response) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|b| b["reason"].as_str().map(str::to_owned))
}

/// Polls `path` through `envoy` until `done` holds for the answer; the time it took.
async fn until(
    envoy: &Envoy,
    path: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&Response) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = envoy.get(path, headers).await;
        if done(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < LOST_AFTER,
            "{path}: the change never reached the filter; last answer {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bundle(admin: SocketAddr) -> (u16, String) {
    let r = support::request(admin.port(), "GET", "/bundle", &[])
        .await
        .expect("bundle request");
    (r.status, r.body)
}

fn apply(config: &Path, dir: &Path, yaml: &str) {
    let file = dir.join("changed.yaml");
    std::fs::write(&file, yaml).expect("policy");
    support::cli_ok(config, &["policy", "apply", file.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_carries_digests_and_public_keys_never_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = wasm_filter::write_bundle_config(dir.path(), "");
    let (_, token) = issue_api_token(&config, &["--service-account", "reporting-bot"]);
    let portcullis = support::Portcullis::start(&config).await;
    let (status, body) = bundle(wasm_filter::admin_addr(&portcullis)).await;
    assert_eq!(status, 200, "{body}");
    let digest = portcullis::identity::digest(&token);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert!(body.contains(&hex), "the token's digest is in the bundle");
    assert!(!body.contains(&token), "the raw API token is in the bundle");
    let secret_part = token.rsplit('_').next().unwrap();
    assert!(
        !body.contains(secret_part),
        "part of the API token is in the bundle"
    );
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys = parsed["jwt"]["jwks"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{private} in {key}");
        }
    }
    let private_pem = std::fs::read_to_string(corpus_case::key_file("rs256.key.pem")).unwrap();
    let private_body: String = private_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !body.contains(&private_body[..40]),
        "the private key is in the bundle"
    );
    assert!(!body.contains("PRIVATE"));

    // A shared HMAC secret cannot be shipped: no bundle at all, and the filter answers 503.
    let hs_dir = tempfile::tempdir().expect("tempdir");
    let hs_config = support::prepared_config(
        hs_dir.path(),
        &format!("sqlite://{}", hs_dir.path().join("p.db").display()),
        "200ms",
        "token",
    );
    let hs = support::Portcullis::start(&hs_config).await;
    let hs_admin = wasm_filter::admin_addr(&hs);
    let (status, body) = bundle(hs_admin).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("shared secret"), "{body}");
    assert!(!body.contains(support::SECRET), "{body}");
    let (_, upstream_addr) = recording::RecordingUpstream::start().await;
    let envoy = wasm_filter::start_wasm_envoy(hs_admin, upstream_addr, None).await;
    let r = envoy.get("/healthz", &[]).await;
    assert_eq!(
        (r.status, reason(&r).as_deref()),
        (503, Some("policy_unavailable"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_policy_changes_and_disabled_users_reach_the_filter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = wasm_filter::write_bundle_config(dir.path(), "");
    let (token_id, token) = issue_api_token(&config, &["--service-account", "reporting-bot"]);
    let jwt = support::cli_ok(&config, &["jwt", "mint", "--user", "grace@example.com"]);
    let jwt = format!("Bearer {}", jwt.trim());
    let portcullis = support::Portcullis::start(&config).await;
    let admin = wasm_filter::admin_addr(&portcullis);
    let (upstream, upstream_addr) = recording::RecordingUpstream::start().await;
    let envoy = wasm_filter::start_wasm_envoy(admin, upstream_addr, None).await;
    wasm_filter::wait_for_bundle(&envoy).await;

    let api = [("x-api-token", token.as_str())];
    let r = envoy.get("/api/v1/roles", &api).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = upstream.take();
    assert_eq!(
        seen.last().unwrap().header_values("x-auth-user-id"),
        ["sa:reporting-bot"]
    );
    // The client's own identity header never reaches the upstream.
    let forged = [
        ("authorization", jwt.as_str()),
        ("x-auth-permissions", "admin"),
    ];
    assert_eq!(envoy.get("/api/v1/roles", &forged).await.status, 200);
    let seen = upstream.take();
    assert_eq!(
        seen.last().unwrap().header_values("x-auth-permissions"),
        ["authenticated,public,roles:read"]
    );

    support::cli_ok(&config, &["token", "revoke", &token_id]);
    let revoke = until(&envoy, "/api/v1/roles", &api, |r| r.status == 401).await;

    let without_health = std::fs::read_to_string(support::root().join("examples/policy.yaml"))
        .unwrap()
        .replace("activities: [GET /healthz]", "activities: [GET /health]");
    apply(&config, dir.path(), &without_health);
    let policy = until(&envoy, "/healthz", &[], |r| r.status == 401).await;

    let disabled = without_health.replace(
        "{email: grace@example.com, name: Grace Hopper, roles: [viewer]}",
        "{email: grace@example.com, name: Grace Hopper, roles: [viewer], disabled: true}",
    );
    apply(&config, dir.path(), &disabled);
    let auth = [("authorization", jwt.as_str())];
    let disable = until(&envoy, "/api/v1/roles", &auth, |r| {
        r.status == 401 && reason(r).as_deref() == Some("invalid_token")
    })
    .await;
    eprintln!(
        "in-process propagation (CLI done -> first request decided by the new bundle): \
         revoke {} ms, policy apply {} ms, user disable {} ms",
        revoke.as_millis(),
        policy.as_millis(),
        disable.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sidecar_the_last_bundle_serves_until_max_age_then_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = wasm_filter::write_bundle_config(dir.path(), "");
    let mut portcullis = support::Portcullis::start(&config).await;
    let admin = wasm_filter::admin_addr(&portcullis);
    let (_, upstream_addr) = recording::RecordingUpstream::start().await;

    // Before any bundle: 503, never an allow. Nothing listens on this port yet.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody_addr = nobody.local_addr().unwrap();
    drop(nobody);
    let early = wasm_filter::start_wasm_envoy(nobody_addr, upstream_addr, None).await;
    let r = early.get("/healthz", &[]).await;
    assert_eq!(
        (r.status, reason(&r).as_deref()),
        (503, Some("policy_unavailable"))
    );

    let envoy = wasm_filter::start_wasm_envoy(admin, upstream_addr, Some("3s")).await;
    wasm_filter::wait_for_bundle(&envoy).await;
    assert_eq!(envoy.get("/healthz", &[]).await.status, 200);
    portcullis.proc.kill();
    let killed = Instant::now();
    // Still deciding from the last bundle: an allow and a deny.
    assert_eq!(envoy.get("/healthz", &[]).await.status, 200);
    assert_eq!(envoy.get("/api/v1/roles", &[]).await.status, 401);
    until(&envoy, "/healthz", &[], |r| {
        r.status == 503 && reason(r).as_deref() == Some("policy_unavailable")
    })
    .await;
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "the last bundle stopped serving {after:?} after the sidecar died, before max_age"
    );
    eprintln!(
        "sidecar killed: last bundle served {} ms more (max_age 3 s), then 503",
        after.as_millis()
    );
}
