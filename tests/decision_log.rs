//! The decision log through real Envoy: one JSON event per decision with the same decision id
//! as the deny body and `x-auth-decision-id`, the query dropped, `traceparent` carried, allows
//! sampled, denies rate-limited with the drops reported, and no token anywhere in any output.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{prepared_config, start_echo, Envoy, Portcullis};

/// portcullis with the example policy, its decision log in `dir/decisions.log` with these
/// settings, behind Envoy.
async fn stack(dir: &Path, decisions: &str) -> (Portcullis, Envoy, std::path::PathBuf) {
    let url = format!("sqlite://{}", dir.join("portcullis.db").display());
    let config = prepared_config(dir, &url, "200ms", "token");
    let log = dir.join("decisions.log");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "log:\n  level: info,portcullis=debug\n",
        &format!(
            "log:\n  level: info,portcullis=debug\n  decisions: {{output: {}, {decisions}}}\n",
            log.display()
        ),
    );
    assert!(text.contains("decisions:"), "the config has a log section");
    std::fs::write(&config, text).unwrap();
    let portcullis = Portcullis::start(&config).await;
    let envoy = Envoy::start(portcullis.addr, start_echo().await).await;
    (portcullis, envoy, log)
}

/// A token for ada@example.com, and its `Authorization` value.
fn ada(portcullis: &Portcullis) -> (String, String) {
    let token = support::cli_ok(
        &portcullis.config,
        &["jwt", "mint", "--user", "ada@example.com"],
    )
    .trim()
    .to_owned();
    let bearer = format!("Bearer {token}");
    (token, bearer)
}

/// The log's events once it holds at least `count` lines.
async fn events(log: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} events:\n{text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_decision_with_the_same_id_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (portcullis, envoy, log) = stack(dir.path(), "allow_sample: 1.0").await;
    let (token, bearer) = ada(&portcullis);
    let query_secret = "s3cr3t-in-the-query";
    let allowed = envoy
        .get(
            &format!("/api/v1/roles?access_token={query_secret}"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(allowed.status, 200);
    let allowed_id = allowed.upstream_header("x-auth-decision-id")[0].clone();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let denied = envoy.get("/api/v1/roles", &[("traceparent", trace)]).await;
    assert_eq!(denied.status, 401);
    let denied_id = denied.json()["decision_id"].as_str().unwrap().to_owned();
    let forged = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.forged-signature-bytes";
    let refused = envoy
        .get("/api/v1/roles", &[("authorization", forged)])
        .await;
    assert_eq!(refused.status, 401);
    let refused_id = refused.json()["decision_id"].as_str().unwrap().to_owned();
    let forbidden = envoy
        .get("/api/v1/nowhere", &[("authorization", &bearer)])
        .await;
    assert_eq!(forbidden.status, 403);
    let forbidden_id = forbidden.json()["decision_id"].as_str().unwrap().to_owned();

    let events = events(&log, 4).await;
    let by_id = |id: &str| {
        events
            .iter()
            .find(|e| e["decision_id"] == id)
            .unwrap_or_else(|| panic!("no event {id} in {events:?}"))
            .clone()
    };
    let allow = by_id(&allowed_id);
    assert_eq!(allow["event"], "decision");
    assert_eq!(allow["outcome"], "allow");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["path"], "/api/v1/roles", "the query is dropped");
    assert_eq!(allow["permission"], "roles:read");
    assert_eq!(allow["credential"], "jwt");
    assert!(allow["principal"].as_str().is_some_and(|p| !p.is_empty()));
    assert!(allow["policy_version"].as_i64().is_some());
    assert!(allow["latency_us"].as_u64().is_some());
    assert!(allow["time"].as_str().unwrap().ends_with('Z'));
    let deny = by_id(&denied_id);
    assert_eq!(deny["outcome"], "deny");
    assert_eq!(deny["status"], 401);
    assert_eq!(deny["reason"], "missing_credential");
    assert_eq!(deny["traceparent"], trace);
    assert_eq!(deny["credential"], serde_json::Value::Null, "no credential");
    let version = allow["policy_version"].clone();
    assert_eq!(
        deny["policy_version"], version,
        "a deny names the policy in force"
    );
    // A 403 decided by the policy names its version, as an allow does.
    let forbidden = by_id(&forbidden_id);
    assert_eq!(forbidden["reason"], "no_matching_activity");
    assert_eq!(forbidden["policy_version"], version);
    assert_eq!(forbidden["credential"], "jwt");
    // A refused JWT is a credential presented, of its kind, and nobody identified.
    let refused = by_id(&refused_id);
    assert_eq!(refused["reason"], "invalid_token");
    assert_eq!(refused["credential"], "jwt");
    assert_eq!(refused["principal"], serde_json::Value::Null);
    assert_eq!(refused["policy_version"], version);
    // The sidecar's own line for it says the same: not identified, a JWT presented.
    let sidecar = portcullis.proc.wait_for_log(&refused_id);
    assert!(sidecar.contains("not identified"), "{sidecar}");
    assert!(sidecar.contains("credential=\"jwt\""), "{sidecar}");
    assert!(
        sidecar.contains(&format!("policy_version={version}")),
        "{sidecar}"
    );
    let log_arg = log.to_str().unwrap();
    let why = support::cli_ok(&portcullis.config, &["why", &refused_id, "--log", log_arg]);
    assert!(why.contains("caller: not identified"), "{why}");
    assert!(!why.contains("anonymous"), "{why}");
    let why = support::cli_ok(
        &portcullis.config,
        &["why", &forbidden_id, "--log", log_arg],
    );
    assert!(
        why.contains(&format!("decided at policy version {version}")),
        "{why}"
    );
    // Every line reads back as the typed event it was written as, unchanged.
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parsed = portcullis::app::event::parse_line(line).expect("a typed event");
        let written: serde_json::Value = serde_json::from_str(line).unwrap();
        let again: serde_json::Value = serde_json::from_str(&parsed.to_json()).unwrap();
        assert_eq!(again, written, "the round trip of {line}");
    }

    // Not the token, not the forged token's signature, not the query: in no output at all.
    let mut all = std::fs::read_to_string(&log).unwrap();
    all.push_str(&portcullis.proc.log_text());
    for secret in [token.as_str(), "forged-signature-bytes", query_secret] {
        assert!(!all.contains(secret), "{secret} reached a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allows_are_sampled_and_denies_limited_with_drops_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (portcullis, envoy, log) =
        stack(dir.path(), "allow_sample: 0.0, deny_limit_per_second: 2").await;
    let (_, bearer) = ada(&portcullis);
    for _ in 0..5 {
        let r = envoy
            .get("/api/v1/roles", &[("authorization", &bearer)])
            .await;
        assert_eq!(r.status, 200);
    }
    const DENIES: u64 = 10;
    for _ in 0..DENIES {
        assert_eq!(envoy.get("/api/v1/roles", &[]).await.status, 401);
    }
    // At least one deny is logged and at least one drop reported; then all are accounted for.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events(&log, 2).await;
        assert!(
            events.iter().all(|e| e["outcome"] != "allow"),
            "allow_sample 0 logs no allow"
        );
        let logged = events.iter().filter(|e| e["outcome"] == "deny").count() as u64;
        let dropped: u64 = events
            .iter()
            .filter(|e| e["event"] == "decisions_dropped")
            .map(|e| e["count"].as_u64().unwrap())
            .sum();
        if logged + dropped == DENIES {
            // The ten denies spanned at most a few seconds, 2 a second.
            assert!((1..=6).contains(&logged), "{logged} logged");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{logged} logged + {dropped} dropped != {DENIES}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
