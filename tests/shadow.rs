//! Shadow policies on two sidecars sharing one PostgreSQL: a candidate that denies what the
//! live policy allows is counted on `/metrics` and logged with the request, while the request
//! is still allowed; `why` explains a logged deny, `replay` finds the changed decision in the
//! recorded log; promoted, the candidate denies on both sidecars; discarded, nothing changes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::pg::{shared_admin_url, PgDatabase};
use support::{cli, cli_ok, prepared_config, request, Portcullis};
use tonic::transport::Channel;

/// How long a sidecar may take to see a change before the test gives up (LISTEN/NOTIFY makes
/// it milliseconds; this only bounds a hung test).
const PATIENCE: Duration = Duration::from_secs(15);

/// A sidecar of its own (config, decision log) on the shared database.
struct Sidecar {
    /// Kept running for the test's length (killed on drop).
    _portcullis: Portcullis,
    client: AuthorizationClient<Channel>,
    admin: u16,
    log: PathBuf,
    config: PathBuf,
}

impl Sidecar {
    async fn start(dir: &Path, url: &str) -> Sidecar {
        std::fs::create_dir_all(dir).unwrap();
        let config = prepared_config(dir, url, "30s", "store");
        let log = dir.join("decisions.log");
        let text = std::fs::read_to_string(&config).unwrap().replacen(
            "log:\n",
            &format!("log:\n  decisions:\n    output: {}\n", log.display()),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let portcullis = Portcullis::start(&config).await;
        let line = portcullis.proc.wait_for_log("serving admin endpoint");
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("admin_addr="))
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            .unwrap()
            .port();
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", portcullis.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        Sidecar {
            _portcullis: portcullis,
            client: AuthorizationClient::new(channel),
            admin,
            log,
            config,
        }
    }

    /// The status a Check answers with, and its decision id.
    async fn check(&mut self, path: &str, bearer: &str) -> (u16, String) {
        let req =
            support::check_request("GET", "app.example.com", path, &[("authorization", bearer)]);
        let res = self.client.check(req).await.unwrap().into_inner();
        let (status, headers): (u16, &[HeaderValueOption]) = match &res.http_response {
            Some(HttpResponse::OkResponse(ok)) => (200, &ok.headers),
            Some(HttpResponse::DeniedResponse(d)) => (
                d.status.as_ref().map(|s| s.code as u16).unwrap_or(0),
                &d.headers,
            ),
            _ => (0, &[]),
        };
        let id = headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == "x-auth-decision-id")
            .map(|h| h.value.clone())
            .expect("a decision id");
        (status, id)
    }

    async fn status_json(&self) -> serde_json::Value {
        let r = request(self.admin, "GET", "/status", &[]).await.unwrap();
        serde_json::from_str(&r.body).unwrap()
    }

    /// Waits until `/status` says a candidate is (or is not) evaluated.
    async fn wait_candidate(&self, evaluated: bool) {
        let started = Instant::now();
        loop {
            let s = self.status_json().await;
            let now = s["candidate"]["evaluated"].as_bool() == Some(true);
            if now == evaluated {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "candidate never {evaluated}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one metric sample (0 when absent).
    async fn metric(&self, sample: &str) -> f64 {
        let r = request(self.admin, "GET", "/metrics", &[]).await.unwrap();
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The decision log line with this id, once written.
    async fn logged(&self, id: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(id)) {
                return serde_json::from_str(line).unwrap();
            }
            assert!(started.elapsed() < PATIENCE, "{id} never logged:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls until the Check answers `expected`.
async fn until_status(sidecar: &mut Sidecar, path: &str, bearer: &str, expected: u16) {
    let started = Instant::now();
    loop {
        let (got, _) = sidecar.check(path, bearer).await;
        if got == expected {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{path} still {got}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DISAGREE: &str =
    "portcullis_shadow_disagreements_total{change=\"allow_to_deny\",permission=\"roles:read\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_is_counted_and_logged_not_enforced_until_promoted_on_two_sidecars() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Sidecar::start(&dir.path().join("a"), &db.url).await;
    let mut b = Sidecar::start(&dir.path().join("b"), &db.url).await;
    let mint = |email: &str| {
        let token = cli_ok(&a.config, &["jwt", "mint", "--user", email]);
        format!("Bearer {}", token.trim())
    };
    let (grace, alan, ada) = (
        mint("grace@example.com"),
        mint("alan@example.com"),
        mint("ada@example.com"),
    );
    assert_eq!(a.check("/api/v1/roles", &grace).await.0, 200);

    // The candidate takes roles:read away from viewers (Grace).
    let candidate = dir.path().join("candidate.yaml");
    std::fs::write(&candidate, "roles:\n  viewer: []\n").unwrap();
    let candidate = candidate.to_str().unwrap();
    let out = cli_ok(&a.config, &["policy", "apply", candidate, "--shadow"]);
    assert!(out.contains("stored the candidate policy"), "{out}");
    assert!(out.contains("~ role viewer"), "{out}");
    a.wait_candidate(true).await;
    b.wait_candidate(true).await;

    // Still allowed on both, and the disagreement counted and logged, request included.
    let before = a.metric(DISAGREE).await;
    let (status, grace_id) = a.check("/api/v1/roles", &grace).await;
    assert_eq!(status, 200, "a candidate is never enforced");
    assert_eq!(b.check("/api/v1/roles", &grace).await.0, 200);
    assert_eq!(
        a.check("/api/v1/roles", &ada).await.0,
        200,
        "ada: admin in both"
    );
    assert_eq!(a.metric(DISAGREE).await - before, 1.0);
    let event = a.logged(&grace_id).await;
    assert_eq!(event["outcome"], "allow");
    assert_eq!(event["path"], "/api/v1/roles");
    assert_eq!(event["shadow"]["outcome"], "deny");
    assert_eq!(event["shadow"]["reason"], "no_matching_activity");

    // A deny, explained from the log.
    let (status, alan_id) = a.check("/api/v1/roles", &alan).await;
    assert_eq!(status, 403);
    a.logged(&alan_id).await;
    let log = a.log.to_str().unwrap().to_owned();
    let why = cli_ok(&a.config, &["why", &alan_id, "--log", &log]);
    assert!(why.contains("deny 403 no_matching_activity"), "{why}");
    assert!(
        why.contains("request: GET app.example.com /api/v1/roles"),
        "{why}"
    );
    assert!(why.contains("by jwt"), "{why}");
    assert!(
        why.contains("permissions held now: [authenticated,public]"),
        "{why}"
    );
    assert!(why.contains("authenticated: GET /api/v1/me"), "{why}");
    assert!(why.contains("none matched"), "{why}");
    let (code, _, err) = cli(&a.config, &["why", "no-such-id", "--log", &log]);
    assert_eq!(code, 66, "not found: {err}");

    // Replay of the recorded log against the candidate: Grace's two allows would change
    // (before and after the candidate was stored); Ada's and Alan's would not.
    for args in [
        vec!["replay", log.as_str(), "--policy", candidate],
        vec!["replay", log.as_str()],
    ] {
        let (code, out, err) = cli(&a.config, &args);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            out.contains(&format!("{grace_id} GET app.example.com /api/v1/roles")),
            "{out}"
        );
        assert!(
            out.contains("allow (permission roles:read) -> deny 403 no_matching_activity"),
            "{out}"
        );
        assert!(!out.contains(&alan_id), "{out}");
        assert!(
            out.contains(
                "replayed 4 decision(s): 2 would change (2 allow -> deny, 0 deny -> allow)"
            ),
            "{out}"
        );
    }
    let same = dir.path().join("same.yaml");
    std::fs::write(&same, "roles:\n  viewer: [roles:read]\n").unwrap();
    let (code, out, _) = cli(
        &a.config,
        &["replay", &log, "--policy", same.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");

    // Promoted: denied on both sidecars; no candidate left to evaluate.
    let out = cli_ok(&a.config, &["policy", "promote"]);
    assert!(out.contains("promoted the candidate policy"), "{out}");
    until_status(&mut a, "/api/v1/roles", &grace, 403).await;
    until_status(&mut b, "/api/v1/roles", &grace, 403).await;
    a.wait_candidate(false).await;
    assert_eq!(a.check("/api/v1/roles", &ada).await.0, 200);
    let (code, _, err) = cli(&a.config, &["policy", "promote"]);
    assert_eq!(code, 66, "nothing to promote: {err}");

    // Discarded: the live policy stays as it is.
    cli_ok(
        &a.config,
        &["policy", "apply", &same.display().to_string(), "--shadow"],
    );
    b.wait_candidate(true).await;
    let out = cli_ok(&a.config, &["policy", "discard"]);
    assert!(out.contains("discarded"), "{out}");
    b.wait_candidate(false).await;
    assert_eq!(b.check("/api/v1/roles", &grace).await.0, 403);
    let (code, _, _) = cli(&a.config, &["policy", "discard"]);
    assert_eq!(code, 66, "nothing to discard");
}
