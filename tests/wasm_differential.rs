//! The differential test of the two modes: every case of the bypass corpus (`tests/corpus/`)
//! that goes through Envoy is sent twice, once through Envoy with ext_authz to the sidecar
//! (`envoy/envoy.yaml`) and once through Envoy with the in-process Wasm filter
//! (`envoy/envoy-wasm.yaml`) fed by the same sidecar's bundle. The status, the deny's headers
//! and body (reason code; the decision id aside) and what the upstream received (method,
//! target, every header, `x-auth-*` included; the decision id's value and Envoy's request id
//! aside) must be identical, case by case.
//!
//! One kind of case differs by design and is checked for what it must be instead: a request
//! no route matches, which Envoy never sends to ext_authz (its router answers 404) and the
//! filter refuses as the core does (`decided_where_ext_authz_is_skipped`).
//! Cases that make the ext_authz server fail on purpose (the tap's error modes) have no
//! counterpart in-process and are left out; the filter's own failure modes are in
//! tests/wasm_live.rs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::corpus_case;
use crate::outcome;
use crate::recording;
use crate::support;
use crate::wasm_filter;
use crate::wire;

use serde_json::Value;

use corpus_case::*;
use outcome::{outcome, Outcome};
use recording::{RecordingUpstream, TapMode};
use wire::WireResponse;

/// Envoy skips ext_authz for a request no route matches (CONNECT, `OPTIONS *`) and its router
/// answers 404; the filter runs before routing and the core refuses the path (403
/// `invalid_path`). Both refuse and nothing reaches the upstream; the filter's answer must be
/// the one the corpus expects of the core for that request (its `grpc` expectation).
fn decided_where_ext_authz_is_skipped(case: &Case, sidecar: &Outcome, filter: &Outcome) -> bool {
    let core = case.grpc_expectation();
    let reason = serde_json::from_str::<Value>(&filter.body)
        .ok()
        .and_then(|b| b["reason"].as_str().map(str::to_owned));
    case.expect().by == By::Envoy
        && sidecar.status == 404
        && sidecar.upstream.is_empty()
        && filter.upstream.is_empty()
        && core.is_some_and(|(status, expected, _)| status == filter.status && expected == reason)
}

async fn send(case: &Case, creds: &Credentials, port: u16) -> Result<WireResponse, String> {
    let (request, ctx) = materialize(case, creds);
    wire::send_case(case, &request, &ctx, port, port).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_decides_alike_through_ext_authz_and_in_process() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = wasm_filter::write_bundle_config(dir.path(), "");
    let creds = Credentials::make(&config);
    let portcullis = support::Portcullis::start(&config).await;
    let admin = wasm_filter::admin_addr(&portcullis);
    let (upstream, upstream_addr) = RecordingUpstream::start().await;
    let ext_authz = support::Envoy::start(portcullis.addr, upstream_addr).await;
    let in_process = wasm_filter::start_wasm_envoy(admin, upstream_addr, None).await;
    wasm_filter::wait_for_bundle(&in_process).await;
    upstream.take();

    let mut failures = Vec::new();
    let (mut run, mut allowed, mut skipped) = (0, 0, 0);
    for Loaded { file, case } in &corpus {
        if case.transport != Transport::Envoy || case.tap != TapMode::Forward {
            continue;
        }
        run += 1;
        let sidecar = match send(case, &creds, ext_authz.port).await {
            Ok(r) => outcome(&r, &upstream),
            Err(e) => panic!("{file} {}: {e}", case.id),
        };
        let filter = match send(case, &creds, in_process.port).await {
            Ok(r) => outcome(&r, &upstream),
            Err(e) => panic!("{file} {}: {e}", case.id),
        };
        if !sidecar.upstream.is_empty() {
            allowed += 1;
        }
        if sidecar != filter && decided_where_ext_authz_is_skipped(case, &sidecar, &filter) {
            skipped += 1;
        }
        if sidecar != filter && !decided_where_ext_authz_is_skipped(case, &sidecar, &filter) {
            failures.push(format!(
                "{file} {}:\n  ext_authz:  {sidecar:?}\n  in-process: {filter:?}",
                case.id
            ));
        }
    }
    eprintln!(
        "differential: {run} corpus cases through both modes ({allowed} reached the upstream, \
         {skipped} refused by the core where Envoy skips ext_authz), {} differ",
        failures.len()
    );
    assert!(run >= 200, "only {run} corpus cases ran");
    assert!(
        allowed > 0,
        "no case reached the upstream: nothing compared"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
