//! The same end-to-end case table through every proxy portcullis ships a config for: Envoy
//! over gRPC (`envoy/envoy.yaml`, the reference), Envoy over HTTP (`envoy/envoy-http.yaml`,
//! `http_service`, portcullis's `server.http_authz_listen`) and nginx (`examples/nginx.conf`,
//! `auth_request`, with `http_authz_trust_forwarded`). Real proxies, real portcullis, the
//! header-echo upstream; only ports differ from the shipped files.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use support::fronts::{self, Front, Kind};

macro_rules! case_table {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn allows_and_identifies_callers() {
                fronts::allows_and_identifies(&Front::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn denies_unknown_and_unpermitted_callers() {
                fronts::denies(&Front::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn strips_spoofed_identity_and_forwarded_headers() {
                fronts::strips_spoofed_identity_headers(&Front::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn denies_path_tricks() {
                fronts::denies_path_tricks(&Front::start($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fails_closed_when_portcullis_is_stopped() {
                fronts::fails_closed(&mut Front::start($kind).await).await;
            }
        }
    };
}

case_table!(envoy_grpc, Kind::EnvoyGrpc);
case_table!(envoy_http, Kind::EnvoyHttp);
case_table!(nginx, Kind::Nginx);

/// Direct to the HTTP ext_authz listener, as a client that could reach it would be: without
/// trust, X-Forwarded-* are ignored; with trust (nginx's mode), they ARE the request, which is
/// why only the proxy may reach that port. This is the spoofing the mode is open to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_when_configured() {
    let forged = [
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
    ];
    let untrusted = Front::start(Kind::EnvoyHttp).await;
    let addr = fronts::http_authz_addr(&untrusted.portcullis);
    let r = support::request(addr.port(), "GET", "/api/v1/admin", &forged)
        .await
        .unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["reason"], "missing_credential");

    let trusted = Front::start(Kind::Nginx).await;
    let addr = fronts::http_authz_addr(&trusted.portcullis);
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
