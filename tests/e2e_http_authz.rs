//! The same cases through every proxy portcullis ships a config for: Envoy over gRPC
//! (`envoy/envoy.yaml`, the reference), Envoy over HTTP (`envoy/envoy-http.yaml`,
//! `http_service`, portcullis's `server.http_authz_listen`) and nginx (`examples/nginx.conf`,
//! `auth_request`, with `http_authz_trust_forwarded`). Real proxies, real portcullis; only
//! ports differ from the shipped files. One set of fronts per test (see `fronts::Fronts`).
//!
//! - The scenario table (`support/fronts.rs`) on each front, then each failing closed.
//! - The bypass corpus (`tests/corpus/`) through all three: every answer and every request
//!   the upstream received is compared with the gRPC front's. Envoy over HTTP must match it
//!   exactly. nginx must match it too, except where the README's table ("The HTTP ext_authz
//!   mode") says why not, each difference a named class below, and never by letting through
//!   what the reference refused.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::corpus_case;
use crate::outcome;
use crate::recording;
use crate::support;
use crate::wire;

use std::collections::BTreeMap;

use corpus_case::*;
use outcome::{outcome, Outcome};
use recording::{RecordingUpstream, TapMode};
use support::fronts::{self, Front, Fronts};
use wire::WireResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_passes_the_scenario_table_and_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
    let config = support::prepared_config(dir.path(), &url, "200ms", "token");
    let echo = support::start_echo().await;
    let mut fronts = Fronts::start(&config, echo).await;
    for front in &fronts.all {
        fronts::allows_and_identifies(front).await;
        fronts::denies(front).await;
        fronts::strips_spoofed_identity_headers(front).await;
        fronts::denies_path_tricks(front).await;
    }
    forwarded_headers_are_believed_only_when_configured(&fronts).await;
    fronts::fails_closed(&mut fronts).await;
}

/// Direct to the HTTP ext_authz listener, as a client that could reach it would be: without
/// trust, X-Forwarded-* are ignored; with trust (nginx's mode), they ARE the request, which is
/// why only the proxy may reach that port. This is the spoofing the mode is open to.
async fn forwarded_headers_are_believed_only_when_configured(fronts: &Fronts) {
    let forged = [
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
    ];
    let addr = fronts::http_authz_addr(&fronts.sidecar);
    let r = support::request(addr.port(), "GET", "/api/v1/admin", &forged)
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["reason"], "missing_credential");

    let addr = fronts::http_authz_addr(&fronts.forwarded);
    let r = support::request(addr.port(), "GET", "/api/v1/admin", &forged)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a direct caller is believed: {}", r.body);
    assert_eq!(r.header("x-auth-subject-type"), Some("anonymous"));
    // Without them, or with one twice, nothing is decided: a 403 invalid_path.
    let r = support::request(addr.port(), "GET", "/healthz", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["reason"], "invalid_path");
    let twice = [
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
    ];
    let r = support::request(addr.port(), "GET", "/healthz", &twice)
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
}

/// The identity headers portcullis sets; nginx cannot remove a client's `x-auth-*` header of
/// any other name (README table), so those are left out of nginx's comparison.
const IDENTITY_HEADERS: [&str; 9] = [
    "x-auth-user-id",
    "x-auth-email",
    "x-auth-name",
    "x-auth-subject-type",
    "x-auth-roles",
    "x-auth-credential",
    "x-auth-token-id",
    "x-auth-permissions",
    "x-auth-decision-id",
];

/// Headers each proxy adds or drops on its own towards the upstream (hop-by-hop, tracing,
/// Envoy's own): not the gate's doing, so not compared between Envoy and nginx.
fn proxy_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "x-request-id"
            | "x-forwarded-proto"
            | "x-forwarded-for"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "keep-alive"
    ) || name.starts_with("x-envoy-")
}

/// An outcome as nginx can match it: status, the challenge and redirect (nginx serves its own
/// deny page and adds the decision id to every answer), and each upstream request's method,
/// target and headers in name order, without proxies' own headers and client `x-auth-*`
/// headers portcullis never sets.
fn nginx_view(o: &Outcome) -> Outcome {
    let upstream = o
        .upstream
        .iter()
        .map(|(m, t, h)| {
            let mut h: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| !proxy_header(k))
                .filter(|(k, _)| {
                    !k.starts_with("x-auth-") || IDENTITY_HEADERS.contains(&k.as_str())
                })
                // nginx sends no header for an empty value (`x-auth-roles` of a user without
                // roles).
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect();
            h.sort();
            (m.clone(), t.clone(), h)
        })
        .collect();
    Outcome {
        status: o.status,
        answer_headers: o
            .answer_headers
            .iter()
            .filter(|(k, _)| k == "www-authenticate" || k == "location" || k == "set-cookie")
            .cloned()
            .collect(),
        body: String::new(),
        upstream,
    }
}

/// Statuses nginx answers itself, before asking portcullis, or (500) when the check's answer
/// is neither 2xx, 401 nor 403 (README table).
const NGINX_OWN: [u16; 9] = [400, 405, 411, 413, 414, 494, 500, 501, 505];

/// Why nginx's answer may differ from the reference's, when it does: each is a row of the
/// README's table ("The HTTP ext_authz mode"). None lets through what portcullis refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NginxDifference {
    /// nginx refused the request itself (its own 4xx, a 500 for a check that did not answer
    /// 2xx/401/403, or a closed connection): nothing reached the upstream.
    RefusedByNginx,
    /// Envoy normalized or refused the request itself; nginx forwards the raw request, and
    /// portcullis answered it as it does on its own (the case's `grpc:` expectation), with
    /// the target it decided forwarded unchanged.
    DecidedOnTheRawRequest,
    /// Envoy refused the request itself (400/404); nginx let portcullis refuse it (401/403).
    RefusedByEnvoy,
    /// Envoy normalized the path and decided the result; nginx forwards the raw target, so
    /// portcullis decided the raw one and refused it (403 `invalid_path`).
    RawPathRefused,
    /// Envoy refused a header name it will not forward (underscores, non-token bytes); nginx
    /// drops such a header (`underscores_in_headers off`, `ignore_invalid_headers`), and the
    /// request is decided without it, which no upstream then receives.
    InvalidHeaderDropped,
    /// Envoy refuses HTTP/1.0 (426); nginx serves it, and portcullis decides it as any other.
    Http10Served,
}

fn refused(o: &Outcome) -> bool {
    o.upstream.is_empty() && (o.status == 0 || o.status >= 400)
}

/// A header name nginx drops: an underscore or a byte outside ASCII.
fn invalid_name(name: &str) -> bool {
    name.contains('_') || !name.is_ascii()
}

/// The header names a case sends, from its header list or its raw request.
fn header_names(case: &Case) -> Vec<String> {
    match &case.raw {
        Some(raw) => raw
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_owned()))
            .collect(),
        None => case.headers.iter().map(|(k, _)| k.clone()).collect(),
    }
}

/// The class of an allowed difference between nginx and the reference, or `None`: a failure.
fn nginx_difference(case: &Case, reference: &Outcome, nginx: &Outcome) -> Option<NginxDifference> {
    let by_envoy = case.expect().by == By::Envoy && refused(reference);
    let alone = case.grpc_expectation().map(|(status, _, _)| status);
    if !refused(nginx) {
        let target_kept =
            nginx.upstream.first().map(|(_, t, _)| t.as_str()) == case.target.as_deref();
        let mut forwarded = nginx.upstream.iter().flat_map(|(_, _, h)| h);
        if by_envoy
            && header_names(case).iter().any(|n| invalid_name(n))
            && !forwarded.any(|(k, _)| invalid_name(k))
        {
            return Some(NginxDifference::InvalidHeaderDropped);
        }
        if by_envoy && case.version.as_deref() == Some("HTTP/1.0") && target_kept {
            return Some(NginxDifference::Http10Served);
        }
        if by_envoy && alone == Some(nginx.status) && target_kept {
            return Some(NginxDifference::DecidedOnTheRawRequest);
        }
        return None;
    }
    if nginx.status == 0 || NGINX_OWN.contains(&nginx.status) {
        return Some(NginxDifference::RefusedByNginx);
    }
    if alone == Some(nginx.status) {
        return Some(NginxDifference::DecidedOnTheRawRequest);
    }
    if by_envoy && [401, 403].contains(&nginx.status) {
        return Some(NginxDifference::RefusedByEnvoy);
    }
    let normalized = match reference.upstream.first() {
        Some((_, target, _)) => Some(target.as_str()) != case.target.as_deref(),
        None => case
            .expect()
            .authorized_path
            .as_deref()
            .is_some_and(|p| Some(p) != case.target.as_deref()),
    };
    (normalized && nginx.status == 403).then_some(NginxDifference::RawPathRefused)
}

async fn send(case: &Case, creds: &Credentials, front: &Front) -> Result<WireResponse, String> {
    let (request, ctx) = materialize(case, creds);
    wire::send_case(case, &request, &ctx, front.port, front.h2_port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_answers_alike_through_every_front() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_corpus_config(dir.path());
    let creds = Credentials::make(&config);
    let (upstream, upstream_addr) = RecordingUpstream::start().await;
    let fronts = Fronts::start(&config, upstream_addr).await;
    upstream.take();

    let mut failures = Vec::new();
    let mut classes: BTreeMap<NginxDifference, Vec<String>> = BTreeMap::new();
    let (mut run, mut allowed) = (0, 0);
    for Loaded { file, case } in &corpus {
        if case.transport != Transport::Envoy || case.tap != TapMode::Forward {
            continue;
        }
        run += 1;
        let mut outcomes = Vec::new();
        for front in &fronts.all {
            let response = send(case, &creds, front)
                .await
                .unwrap_or_else(|e| panic!("{file} {} via {:?}: {e}", case.id, front.kind));
            outcomes.push(outcome(&response, &upstream));
        }
        let (reference, http, nginx) = (&outcomes[0], &outcomes[1], &outcomes[2]);
        if !reference.upstream.is_empty() {
            allowed += 1;
        }
        if http != reference {
            failures.push(format!(
                "{file} {} (Envoy HTTP):\n  gRPC: {reference:?}\n  HTTP: {http:?}",
                case.id
            ));
        }
        let (want, got) = (nginx_view(reference), nginx_view(nginx));
        if want != got {
            match nginx_difference(case, &want, &got) {
                Some(class) => classes.entry(class).or_default().push(case.id.clone()),
                None => failures.push(format!(
                    "{file} {} (nginx):\n  gRPC:  {want:?}\n  nginx: {got:?}",
                    case.id
                )),
            }
        }
    }
    eprintln!(
        "{run} corpus cases through three fronts ({allowed} reached the upstream), {} failed; \
         nginx differs by design in: {classes:?}",
        failures.len()
    );
    assert!(run >= 200, "only {run} corpus cases ran");
    assert!(allowed > 50, "only {allowed} cases reached the upstream");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
