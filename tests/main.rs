//! Every integration test, as one test binary: each file of `tests/` is a module here, and
//! `tests/support/` is the harness they share (one build of it, one link, one private
//! PostgreSQL cluster and one set of tools for the whole run). Run one file's tests with
//! `cargo test --test integration <file>::`, for example `cargo test --test integration corpus::`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/corpus_case.rs"]
mod corpus_case;
#[path = "support/outcome.rs"]
mod outcome;
#[path = "support/recording.rs"]
mod recording;
mod support;
#[path = "support/wasm_filter.rs"]
mod wasm_filter;
#[path = "support/wire.rs"]
mod wire;

mod admin;
mod browser;
mod cli;
mod corpus;
mod decision_log;
mod e2e_api_tokens;
mod e2e_envoy;
mod e2e_http_authz;
mod gc;
mod grpc;
mod k8s_sidecar;
mod large_policy;
mod login;
mod login_store;
mod metrics;
mod postgres;
mod properties;
mod shadow;
mod snapshot_tokens;
mod sqlite_reload;
mod sso_browser;
mod store;
mod store_candidate;
mod wasm_differential;
mod wasm_live;
