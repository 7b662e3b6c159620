//! `/metrics` on the admin endpoint after a known sequence of requests through real Envoy:
//! exact counter values, bounded labels, and no caller, token or path in any label.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeMap;

use support::{request, Stack};

/// Every sample of an OpenMetrics text: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_owned(), value.parse().expect("number"))
        })
        .collect()
}

async fn scrape(admin_port: u16) -> (String, BTreeMap<String, f64>) {
    let r = request(admin_port, "GET", "/metrics", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    let parsed = samples(&r.body);
    (r.body, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_after_a_known_sequence_through_envoy() {
    let stack = Stack::start().await;
    let line = stack.portcullis.proc.wait_for_log("serving admin endpoint");
    let admin: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin_addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin_addr in {line:?}"));
    let ada = stack.token("ada@example.com");
    let alan = stack.token("alan@example.com");
    let (_, before) = scrape(admin.port()).await;

    let bearer = format!("Bearer {ada}");
    for _ in 0..3 {
        let r = stack
            .envoy
            .get("/api/v1/roles", &[("authorization", &bearer)])
            .await;
        assert_eq!(r.status, 200);
    }
    let cookie = format!("theme=dark; jwt-token={ada}");
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("cookie", &cookie)])
            .await
            .status,
        200
    );
    assert_eq!(stack.envoy.get("/api/v1/roles", &[]).await.status, 401);
    let alan_bearer = format!("Bearer {alan}");
    assert_eq!(
        stack
            .envoy
            .send(
                "DELETE",
                "/api/v1/roles/42",
                &[("authorization", &alan_bearer)]
            )
            .await
            .status,
        403
    );
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("authorization", "Bearer x.y.z")])
            .await
            .status,
        401
    );

    let (text, after) = scrape(admin.port()).await;
    let delta = |name: &str| {
        after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
    };
    let expected = [
        (
            r#"portcullis_decisions_total{outcome="allow",reason=""}"#,
            4.0,
        ),
        (
            r#"portcullis_decisions_total{outcome="deny",reason="missing_credential"}"#,
            1.0,
        ),
        (
            r#"portcullis_decisions_total{outcome="deny",reason="no_matching_activity"}"#,
            1.0,
        ),
        (
            r#"portcullis_decisions_total{outcome="deny",reason="invalid_token"}"#,
            1.0,
        ),
        ("portcullis_check_duration_seconds_count", 7.0),
        (r#"portcullis_credentials_total{kind="jwt_header"}"#, 5.0),
        (r#"portcullis_credentials_total{kind="jwt_cookie"}"#, 1.0),
        (r#"portcullis_credentials_total{kind="none"}"#, 1.0),
        (r#"portcullis_credentials_total{kind="api_token"}"#, 0.0),
        // ada's token: verified once, then three hits (header twice more, the cookie);
        // alan's and the malformed one are misses.
        (r#"portcullis_jwt_cache_lookups_total{result="hit"}"#, 3.0),
        (r#"portcullis_jwt_cache_lookups_total{result="miss"}"#, 3.0),
    ];
    for (name, value) in expected {
        assert_eq!(delta(name), value, "{name}\n{text}");
    }
    assert_eq!(after["portcullis_serving"], 1.0);
    assert_eq!(after["portcullis_store_reachable"], 1.0);
    assert_eq!(
        after["portcullis_snapshot_version"],
        before["portcullis_snapshot_version"]
    );
    assert!(after["portcullis_reloads_total"] >= 1.0);
    assert_eq!(after["portcullis_reload_failures_total"], 0.0);
    every_shipped_query_names_a_served_metric(&after);
    // Bounded labels only: no token, email, path or host anywhere in the output.
    for secret in [
        ada.as_str(),
        alan.as_str(),
        "ada@example.com",
        "/api/v1",
        "example.com",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
}

/// The alert rules and the Grafana dashboard under `examples/monitoring/` parse, and every
/// `portcullis_*` series they query is one the server serves.
fn every_shipped_query_names_a_served_metric(served: &BTreeMap<String, f64>) {
    let served: std::collections::BTreeSet<&str> = served
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let dir = support::root().join("examples/monitoring");
    let alerts = std::fs::read_to_string(dir.join("alerts.yaml")).unwrap();
    let rules: serde_json::Value = serde_norway::from_str(&alerts).unwrap();
    let mut queries: Vec<String> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        queries.len() >= 3,
        "snapshot stale, deny spike, store unreachable"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let name = regex::Regex::new(r"portcullis_[a-z_]+").unwrap();
    let mut checked = 0;
    for query in &queries {
        for m in name.find_iter(query) {
            assert!(
                served.contains(m.as_str()),
                "{} (in {query:?}) is not served",
                m.as_str()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} metric references");
}

/// Every series the README's metrics table lists is served by a sidecar that has loaded its
/// policy and decided nothing yet (rows marked "only with" excepted: they need login or the
/// decision log), with a sample, not only a `# TYPE` line; the labelled families carry each of
/// their bounded label values at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_series_is_served_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
    let config = support::prepared_config(dir.path(), &url, "200ms", "token");
    let portcullis = support::Portcullis::start(&config).await;
    let admin = portcullis.admin_addr();
    let (_, served) = scrape(admin.port()).await;
    let names: std::collections::BTreeSet<&str> = served
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    let readme = std::fs::read_to_string(support::root().join("README.md")).unwrap();
    let start = readme.find("| metric | what |").expect("the metrics table");
    let mut documented = Vec::new();
    for row in readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
    {
        let mut cells = row.split('|').skip(1);
        let (names_cell, what) = (cells.next().unwrap(), cells.next().unwrap());
        if what.trim_start().starts_with("only with") {
            continue;
        }
        for name in names_cell.split('`').skip(1).step_by(2) {
            documented.push(name.split('{').next().unwrap().to_owned());
        }
    }
    assert!(documented.len() >= 15, "{documented:?}");
    for name in &documented {
        let histogram = format!("{name}_bucket");
        assert!(
            names.contains(name.as_str()) || names.contains(histogram.as_str()),
            "{name} is documented but has no sample:\n{served:#?}"
        );
    }
    for series in [
        r#"portcullis_decisions_total{outcome="allow",reason=""}"#,
        r#"portcullis_decisions_total{outcome="deny",reason="invalid_token"}"#,
        r#"portcullis_decisions_total{outcome="deny",reason="no_matching_activity"}"#,
        r#"portcullis_shadow_disagreements_total{change="allow_to_deny",permission=""}"#,
        r#"portcullis_shadow_disagreements_total{change="deny_to_allow",permission=""}"#,
    ] {
        assert_eq!(served.get(series), Some(&0.0), "{series}");
    }
}
