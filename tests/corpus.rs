//! The bypass corpus (`tests/corpus/*.yaml`, one case per entry): every request an attacker
//! might try, sent through real Envoy running the shipped `envoy/envoy.yaml` to portcullis and
//! a recording upstream, then (where Envoy lets it through) straight to portcullis over gRPC.
//!
//! Through Envoy each case checks the status and reason code, whether Envoy or portcullis
//! decided (a tap between them records every `Check`), and the differential property users
//! depend on: whenever the upstream received a request, its method, request target and `Host`
//! are exactly those portcullis was asked about and allowed, and its `x-auth-*` headers are
//! exactly the ones portcullis set, each once, whatever the client sent.
//!
//! The format is described in `tests/corpus/README.md`; `tests/support/corpus_case.rs` reads it.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::corpus_case;
use crate::recording;
use crate::support;
use crate::wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use portcullis::check::CheckService;
use serde_json::Value;

use corpus_case::*;
use recording::{AuthzTap, RecordingUpstream, TapMode};

/// The corpus must not shrink below the size the issue asked for.
const MIN_CASES: usize = 300;

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn deny_error(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        _ => "?",
    }
}

/// The identity headers portcullis set on an allow, as (name, value).
fn allow_headers(response: &CheckResponse) -> Option<Vec<(String, String)>> {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Some(
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        ),
        _ => None,
    }
}

fn http_of(request: &CheckRequest) -> Option<&attribute_context::HttpRequest> {
    request.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// Checks one case through Envoy; returns the problems found.
async fn run_through_envoy(
    case: &Case,
    creds: &Credentials,
    envoy_port: u16,
    tap: &AuthzTap,
    upstream: &RecordingUpstream,
) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = case.expect();
    let (request, ctx) = materialize(case, creds);
    tap.take();
    upstream.take();
    tap.set_mode(case.tap);
    let response = match wire::send_case(case, &request, &ctx, envoy_port, envoy_port).await {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    tap.set_mode(TapMode::Forward);
    let checks = tap.take();
    let received = upstream.take();

    // Who decided.
    match expect.by {
        By::Envoy => {
            if !checks.is_empty() {
                problems.push(format!(
                    "expected Envoy to answer alone, but portcullis was asked {} time(s)",
                    checks.len()
                ));
            }
        }
        By::Portcullis if !expect.differential_only => {
            if checks.len() != 1 {
                problems.push(format!(
                    "expected portcullis to be asked once, asked {} time(s) (status {}, {:?})",
                    checks.len(),
                    response.status,
                    response.error
                ));
            }
        }
        By::Portcullis => {}
    }

    // Status and reason.
    if !expect.differential_only {
        let want = expect.status.expect("status");
        if response.status != want {
            problems.push(format!(
                "status {} ({}), expected {want}{}",
                response.status,
                response.error.as_deref().unwrap_or(response.body.trim()),
                expect
                    .reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(want) = &expect.authorized_path {
        let asked: Vec<&str> = checks
            .iter()
            .filter_map(|c| http_of(&c.request).map(|h| h.path.as_str()))
            .collect();
        if asked != [want.as_str()] {
            problems.push(format!(
                "portcullis was asked about {asked:?}, expected {want:?}"
            ));
        }
    }
    // A deny as portcullis sent it, and as the client received it through Envoy.
    let denied = checks
        .first()
        .and_then(|c| match &c.response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => Some((
                d.status.as_ref().map(|s| s.code).unwrap_or(0),
                d.body.clone(),
            )),
            _ => None,
        });
    if let Some((code, sent)) = &denied {
        let body: Value = serde_json::from_str(sent).unwrap_or(Value::Null);
        if let Some(reason) = &expect.reason {
            if !expect.differential_only && body["reason"] != reason.as_str() {
                problems.push(format!("reason {}, expected {reason}", body["reason"]));
            }
        }
        if i32::from(response.status) != *code {
            problems.push(format!(
                "portcullis denied with {code}, the client got {}",
                response.status
            ));
        }
        if body["error"] != deny_error(u16::try_from(*code).unwrap_or(0)) {
            problems.push(format!(
                "deny body error {} for status {code}",
                body["error"]
            ));
        }
        if request.method != "HEAD" && case.raw.is_none() && response.body != *sent {
            problems.push(format!(
                "the client got body {:?}, portcullis sent {sent:?}",
                response.body
            ));
        }
        if body["decision_id"].as_str() != response.header("x-auth-decision-id") {
            problems.push("deny body and header name different decision ids".to_owned());
        }
    } else if expect.reason.is_some() && !expect.differential_only && response.status != 200 {
        problems.push(format!(
            "expected a portcullis deny ({:?}), got {} {}",
            expect.reason,
            response.status,
            response.body.trim()
        ));
    }
    if expect.by == By::Envoy && response.header("x-auth-decision-id").is_some() {
        problems.push("an Envoy rejection carries a portcullis decision id".to_owned());
    }

    // The differential property.
    let allowed: Vec<_> = checks
        .iter()
        .filter_map(|c| allow_headers(&c.response).map(|h| (c, h)))
        .collect();
    if received.len() > 1 {
        problems.push(format!("upstream received {} requests", received.len()));
    }
    if !received.is_empty() && allowed.is_empty() {
        problems.push("the upstream received a request portcullis never allowed".to_owned());
    }
    if received.is_empty() && !allowed.is_empty() {
        problems.push(format!(
            "portcullis allowed but the upstream received nothing (status {})",
            response.status
        ));
    }
    for got in &received {
        let ids = got.header_values("x-auth-decision-id");
        let Some((check, set)) = allowed.iter().find(|(_, set)| {
            set.iter()
                .any(|(k, v)| k == "x-auth-decision-id" && ids == [v.as_str()])
        }) else {
            problems.push(format!(
                "upstream request has decision ids {ids:?}, none of them an allow"
            ));
            continue;
        };
        let http = http_of(&check.request).expect("http attributes");
        if got.target != http.path {
            problems.push(format!(
                "upstream target {:?} differs from the path portcullis authorized {:?}",
                got.target, http.path
            ));
        }
        let hosts = got.header_values("host");
        if hosts != [http.host.as_str()] {
            problems.push(format!(
                "upstream Host {hosts:?} differs from the host portcullis authorized {:?}",
                http.host
            ));
        }
        if got.method != http.method {
            problems.push(format!(
                "upstream method {:?} differs from the authorized {:?}",
                got.method, http.method
            ));
        }
        // Identity headers: exactly portcullis' own, each once.
        let mut upstream_auth: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-auth-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        // (portcullis may also set `cookie`: the request's cookies without its credential.)
        let mut ours: Vec<(String, String)> = set
            .iter()
            .filter(|(k, _)| k.starts_with("x-auth-"))
            .cloned()
            .collect();
        upstream_auth.sort();
        ours.sort();
        let mut names: Vec<&str> = upstream_auth.iter().map(|(k, _)| k.as_str()).collect();
        names.dedup();
        if names.len() != upstream_auth.len() {
            problems.push(format!(
                "an x-auth-* header reached the upstream twice: {upstream_auth:?}"
            ));
        }
        if upstream_auth != ours {
            problems.push(format!(
                "upstream x-auth-* headers {upstream_auth:?} are not exactly portcullis' {ours:?}"
            ));
        }
        if let Some(want) = &expect.upstream_target {
            if &got.target != want {
                problems.push(format!(
                    "upstream target {:?}, expected {want:?}",
                    got.target
                ));
            }
        }
        for (name, values) in &expect.upstream {
            let values: Vec<String> = values.iter().map(|v| expand(v, &ctx)).collect();
            let got_values = got.header_values(name);
            if got_values != values {
                problems.push(format!(
                    "upstream {name} {got_values:?}, expected {values:?}"
                ));
            }
        }
    }
    if !problems.is_empty() {
        for check in &checks {
            if let Some(http) = http_of(&check.request) {
                problems.push(format!(
                    "(portcullis was asked: {} {:?} host {:?})",
                    http.method, http.path, http.host
                ));
            }
        }
    }
    problems
}

/// The CheckRequest Envoy would send for a case if it forwarded the request unchanged.
fn check_request_for(case: &Case, creds: &Credentials) -> CheckRequest {
    if let Some(spec) = &case.grpc_request {
        let ctx = case_ctx(case, creds);
        if spec.no_http {
            return CheckRequest {
                attributes: Some(AttributeContext::default()),
            };
        }
        let mut entries: Vec<HeaderValue> = spec
            .headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: expand(k, &ctx),
                raw_value: expand(v, &ctx).into_bytes(),
                ..Default::default()
            })
            .collect();
        for (k, hex) in &spec.headers_hex {
            entries.push(HeaderValue {
                key: k.clone(),
                raw_value: decode_hex(hex),
                ..Default::default()
            });
        }
        let mut request = support::check_request(
            &spec.method.clone().unwrap_or_else(|| "GET".to_owned()),
            &spec.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            &spec
                .path
                .as_deref()
                .map(|p| expand(p, &ctx))
                .unwrap_or_default(),
            &[],
        );
        let http = request
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .as_mut()
            .unwrap();
        http.headers = spec
            .legacy_headers
            .iter()
            .map(|(k, v)| (k.clone(), expand(v, &ctx)))
            .collect();
        if !entries.is_empty() {
            http.header_map = Some(HeaderMap { headers: entries });
        }
        return request;
    }
    let (request, _ctx) = materialize(case, creds);
    let host = request.host.clone().unwrap_or_default();
    let mut check = support::check_request(&request.method, &host, &request.target, &[]);
    let http = check
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    // As Envoy sends them with `encode_raw_headers`: names lower-cased, repeats separate.
    http.header_map = Some(HeaderMap {
        headers: request
            .headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_ascii_lowercase(),
                raw_value: to_bytes(v, case.latin1),
                ..Default::default()
            })
            .collect(),
    });
    check
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

async fn run_through_grpc(case: &Case, creds: &Credentials, service: &CheckService) -> Vec<String> {
    let Some((status, reason, upstream)) = case.grpc_expectation() else {
        return Vec::new();
    };
    let request = check_request_for(case, creds);
    let response = portcullis::grpc::decide(service, &request).await;
    let mut problems = Vec::new();
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            if status != 200 {
                problems.push(format!("gRPC: allowed, expected {status} {reason:?}"));
            }
            let headers: Vec<(String, String)> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            if names.len() != before {
                problems.push(format!("gRPC: an identity header set twice: {headers:?}"));
            }
            let ctx = case_ctx(case, creds);
            for (name, values) in &upstream {
                let values: Vec<String> = values.iter().map(|v| expand(v, &ctx)).collect();
                let got: Vec<String> = headers
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .collect();
                if got != values {
                    problems.push(format!("gRPC: {name} {got:?}, expected {values:?}"));
                }
            }
            // Every client-sent x-auth-* header is overwritten or removed.
            let sent: Vec<String> = http_of(&request)
                .map(|h| {
                    let raw = h
                        .header_map
                        .iter()
                        .flat_map(|m| m.headers.iter())
                        .map(|e| e.key.clone());
                    raw.chain(h.headers.keys().cloned()).collect()
                })
                .unwrap_or_default();
            for name in sent {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("x-auth-")
                    && !names.contains(&lower.as_str())
                    && !ok.headers_to_remove.contains(&lower)
                {
                    problems.push(format!(
                        "gRPC: client header {name:?} neither overwritten nor removed"
                    ));
                }
            }
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            let code = d.status.as_ref().map(|s| s.code).unwrap_or(0);
            let body: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
            if code != i32::from(status) {
                problems.push(format!(
                    "gRPC: denied {code} {}, expected {status} {reason:?}",
                    body["reason"]
                ));
            } else if let Some(reason) = &reason {
                if body["reason"] != reason.as_str() {
                    problems.push(format!(
                        "gRPC: reason {}, expected {reason}",
                        body["reason"]
                    ));
                }
            }
        }
        other => problems.push(format!("gRPC: not an OK or denied response: {other:?}")),
    }
    if response.status.is_none() {
        problems.push("gRPC: a CheckResponse without a status".to_owned());
    }
    problems
}

/// The in-process Check service over the corpus' config and database, as `serve` builds it
/// (or broken the way `kind` says).
async fn in_process_service(config_path: &Path, kind: GrpcService) -> CheckService {
    use portcullis::authz::Authorizer;
    let config = portcullis::config::Config::load(Some(config_path), |_| None).expect("config");
    let store = portcullis::app::open_store(&config).await.expect("store");
    let identifier = portcullis::app::identifier(&config).expect("identifier");
    let snapshot = match kind {
        GrpcService::NoPolicy => None,
        _ => Some(Arc::new(
            portcullis::manage::load_snapshot(&store)
                .await
                .expect("snapshot"),
        )),
    };
    if kind == GrpcService::StoreDown {
        // The database goes away after the snapshot loaded: nothing on the request path may
        // need it (API tokens are in the snapshot too).
        store.close().await;
    }
    let handle = Arc::new(ArcSwapOption::from(snapshot));
    let authorizer = Authorizer::new(handle, Arc::new(identifier))
        .with_permission_source(config.jwt.permissions_from);
    CheckService::new(Arc::new(authorizer))
}

fn describe(file: &str, case: &Case, problems: &[String]) -> String {
    let note = case
        .note
        .as_deref()
        .map(|n| format!("\n  ({n})"))
        .unwrap_or_default();
    format!(
        "{file} {} [{}]:{note}\n  {}",
        case.id,
        case.source,
        problems.join("\n  ")
    )
}

fn report(run: &str, failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{run}: {} of {total} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Rows of SECURITY.md §1–4 that the corpus must keep covering, by the source a case names.
const REQUIRED_SOURCES: &[&str] = &[
    "CVE-2019-9901",
    "CVE-2021-29492",
    "CVE-2021-31920",
    "CVE-2026-26205",
    "CVE-2021-32779",
    "CVE-2021-39156",
    "CVE-2026-73511",
    "CVE-2026-73551",
    "CVE-2026-73553",
    "CVE-2023-27488",
    "GHSA-7rh7-c77v-6434",
    "CVE-2026-32811",
    "CVE-2026-73547",
    "CVE-2021-39155",
    "CVE-2025-64484",
    "CVE-2021-32777",
    "CVE-2020-25017",
    "CVE-2022-23540",
    "CVE-2015-9235",
    "CVE-2026-44699",
    "CVE-2018-0114",
    "CVE-2026-25537",
    "CVE-2022-21449",
    "SECURITY.md §1",
    "SECURITY.md §2",
    "SECURITY.md §3",
    "SECURITY.md §4",
    "envoy path_utility_test",
    "istio normalization",
];

#[test]
fn corpus_is_well_formed() {
    let corpus = load_corpus();
    assert!(
        corpus.len() >= MIN_CASES,
        "the corpus has {} cases, fewer than {MIN_CASES}",
        corpus.len()
    );
    let mut ids = HashMap::new();
    for Loaded { file, case } in &corpus {
        if let Some(other) = ids.insert(case.id.clone(), file.clone()) {
            panic!("case id {:?} in {file} and {other}", case.id);
        }
        assert!(!case.source.trim().is_empty(), "{}: no source", case.id);
        match case.transport {
            Transport::Envoy => {
                let e = case.expect();
                assert!(
                    e.differential_only || e.status.is_some(),
                    "{}: no status",
                    case.id
                );
                if let (Some(status), By::Portcullis, false) = (e.status, e.by, e.differential_only)
                {
                    if status != 200 {
                        assert!(
                            e.reason.is_some(),
                            "{}: a portcullis deny names its reason",
                            case.id
                        );
                    }
                }
                assert!(
                    case.target.is_some() || case.raw.is_some(),
                    "{}: no target",
                    case.id
                );
                assert!(
                    ["1.1", "2"].contains(&case.http.as_str()),
                    "{}: http",
                    case.id
                );
            }
            Transport::Grpc => {
                assert!(case.grpc_request.is_some(), "{}: grpc_request", case.id);
                assert!(
                    matches!(case.grpc, Some(GrpcExpect::Decision { .. })),
                    "{}: a gRPC-only case needs a grpc expectation",
                    case.id
                );
            }
        }
        if let Some((status, reason, _)) = case.grpc_expectation() {
            let code = reason.as_deref();
            let consistent = match status {
                200 => code.is_none(),
                401 => matches!(
                    code,
                    Some("missing_credential" | "invalid_token" | "ambiguous_credential")
                ),
                400 => matches!(code, Some("invalid_header")),
                403 => matches!(code, Some("invalid_path" | "no_matching_activity")),
                503 => matches!(code, Some("policy_unavailable")),
                _ => false,
            };
            assert!(
                consistent,
                "{}: status {status} with reason {code:?}",
                case.id
            );
        }
    }
    for source in REQUIRED_SOURCES {
        assert!(
            corpus.iter().any(|l| l.case.source.contains(source)),
            "no corpus case names {source:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_envoy() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_corpus_config(dir.path());
    let creds = Credentials::make(&config);
    let portcullis = support::Portcullis::start(&config).await;
    let (tap, tap_addr) = AuthzTap::start(portcullis.addr).await;
    let (upstream, upstream_addr) = RecordingUpstream::start().await;
    let envoy = support::Envoy::start(tap_addr, upstream_addr).await;

    let mut failures = Vec::new();
    let mut run = 0;
    for Loaded { file, case } in &corpus {
        if case.transport != Transport::Envoy {
            continue;
        }
        run += 1;
        let problems = run_through_envoy(case, &creds, envoy.port, &tap, &upstream).await;
        if !problems.is_empty() {
            failures.push(describe(file, case, &problems));
        }
    }
    report("through Envoy", &failures, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_grpc() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_corpus_config(dir.path());
    let creds = Credentials::make(&config);
    let mut services = HashMap::new();
    for kind in [
        GrpcService::Serving,
        GrpcService::NoPolicy,
        GrpcService::StoreDown,
    ] {
        services.insert(kind, in_process_service(&config, kind).await);
    }

    let mut failures = Vec::new();
    let mut run = 0;
    for Loaded { file, case } in &corpus {
        if case.grpc_expectation().is_none() {
            continue;
        }
        run += 1;
        let problems = run_through_grpc(case, &creds, &services[&case.grpc_service]).await;
        if !problems.is_empty() {
            failures.push(describe(file, case, &problems));
        }
    }
    assert!(run > 0, "no case ran over gRPC");
    report("through gRPC", &failures, run);
}
