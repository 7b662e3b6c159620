//! The admin endpoint, for probes and operators: `/status` (JSON: policy version, snapshot
//! age, store reachability, last error, log lines dropped, login provider state), `/ready` (200 once a snapshot is
//! loaded and the login provider's and outside issuers' keys fetched), `/live` and `/bundle`
//! (the in-process filter's bundle: users, roles, token digests, public keys).
//! Plain HTTP, bound to loopback by default. With `server.admin_token_file`, `/status`,
//! `/bundle` and `/metrics` need `Authorization: Bearer <token>` (compared in constant time, as digests;
//! `/metrics` stays open with `server.admin_metrics_open`); `/live` and `/ready` are always
//! open, for the kubelet's probes.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::observe::metrics::{self, Metrics};
use crate::app::refresh::status::ReloadStatus;
use crate::app::LogDrops;
use crate::login::LoginService;

/// Who may read `/status` and `/metrics`.
#[derive(Clone, Default)]
pub(in crate::app) struct AdminAuth {
    /// The digest of the bearer token; `None`: no token configured, all open.
    token: Option<crate::identity::TokenDigest>,
    metrics_open: bool,
}

impl AdminAuth {
    pub fn new(token: Option<&crate::config::Secret<String>>, metrics_open: bool) -> Self {
        AdminAuth {
            token: token.map(|t| crate::identity::digest(t.expose())),
            metrics_open,
        }
    }

    /// Whether a request with these headers carries the token (exactly one `Authorization:
    /// Bearer` header with it), or needs none.
    fn allows(&self, headers: &HeaderMap, metrics: bool) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        if metrics && self.metrics_open {
            return true;
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| crate::identity::digest(token.trim()));
        presented.is_some_and(|p| bool::from(p.ct_eq(expected)))
    }

    /// The answer to a request without the token.
    fn refuse() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this endpoint needs Authorization: Bearer <server.admin_token_file>\n",
        )
            .into_response()
    }
}

/// What the admin endpoint reports from.
pub(in crate::app) struct Admin {
    pub status: Arc<Mutex<ReloadStatus>>,
    pub login: Option<Arc<LoginService>>,
    pub issuers_ready: Vec<Arc<std::sync::atomic::AtomicBool>>,
    pub log_drops: LogDrops,
    pub metrics: Arc<Metrics>,
    pub bundle: Arc<crate::app::observe::bundle::BundleSource>,
    pub auth: AdminAuth,
}

/// The admin endpoint: `/status` (JSON), `/ready` (200 once a snapshot is loaded), `/live`,
/// `/metrics` (Prometheus, OpenMetrics text).
pub(in crate::app) async fn serve_admin(
    listener: TcpListener,
    admin: Admin,
    mut stop: watch::Receiver<bool>,
) {
    use axum::routing::get;
    let Admin {
        status,
        login,
        issuers_ready,
        log_drops,
        metrics,
        bundle,
        auth,
    } = admin;
    let metrics_auth = auth.clone();
    let bundle_auth = auth.clone();
    let for_status = status.clone();
    let for_status_login = login.clone();
    let app = axum::Router::new()
        .route(
            "/status",
            get(move |headers: HeaderMap| {
                let allowed = auth.allows(&headers, false);
                let mut body = for_status.lock().map(|s| s.to_json()).unwrap_or_default();
                body["log_lines_dropped"] = log_drops.count().into();
                if let Some(login) = &for_status_login {
                    body["login"] = serde_json::json!({
                        "provider_ready": login.is_ready(),
                        "provider_key_fetches": login.provider().map(|p| p.keys.fetch_count()),
                        "provider_keys": login.provider().map(|p| p.keys.status()),
                    });
                }
                async move {
                    if allowed {
                        axum::Json(body).into_response()
                    } else {
                        AdminAuth::refuse()
                    }
                }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = status.lock().map(|s| s.version.is_some()).unwrap_or(false);
                // With login configured, ready also waits for the provider's keys.
                let login_ready = login.as_ref().is_none_or(|l| l.is_ready())
                    && issuers_ready
                        .iter()
                        .all(|r| r.load(std::sync::atomic::Ordering::Relaxed));
                async move {
                    if !ready {
                        (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n")
                    } else if !login_ready {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "login provider or issuer keys not reached\n",
                        )
                    } else {
                        (StatusCode::OK, "ready\n")
                    }
                }
            }),
        )
        .route("/live", get(|| async { "live\n" }))
        .route(
            "/bundle",
            get(move |headers: HeaderMap| {
                // The bundle names users, roles and token digests: behind the token, as
                // `/status` is, when one is configured.
                let response = if bundle_auth.allows(&headers, false) {
                    bundle.respond(&headers)
                } else {
                    AdminAuth::refuse()
                };
                async move { response }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let body = metrics_auth
                    .allows(&headers, true)
                    .then(|| metrics.encode());
                async move {
                    match body {
                        Some(body) => {
                            ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
                        }
                        None => AdminAuth::refuse(),
                    }
                }
            }),
        );
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "an-admin-token-of-enough-length";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn status_and_metrics_need_exactly_the_configured_bearer_token() {
        let secret = crate::config::Secret::new(TOKEN.to_owned());
        let auth = AdminAuth::new(Some(&secret), false);
        let right = format!("Bearer {TOKEN}");
        let lower = format!("bearer {TOKEN}");
        let basic = format!("Basic {TOKEN}");
        let cases: [(&[&str], bool); 8] = [
            (&[], false),
            (&["Bearer wrong-token-of-enough-length-xx"], false),
            (&[&basic], false),
            (&[TOKEN], false),
            (&["Bearer"], false),
            (&[&right, &right], false),
            (&[&right], true),
            (&[&lower], true),
        ];
        for (values, allowed) in cases {
            for metrics in [false, true] {
                assert_eq!(
                    auth.allows(&headers(values), metrics),
                    allowed,
                    "{values:?} metrics={metrics}"
                );
            }
        }
    }

    #[test]
    fn metrics_open_only_when_the_operator_says_so_and_no_token_means_open() {
        let secret = crate::config::Secret::new(TOKEN.to_owned());
        let open_metrics = AdminAuth::new(Some(&secret), true);
        assert!(open_metrics.allows(&headers(&[]), true));
        assert!(!open_metrics.allows(&headers(&[]), false));
        let none = AdminAuth::new(None, false);
        assert!(none.allows(&headers(&[]), false) && none.allows(&headers(&[]), true));
        let refused = AdminAuth::refuse();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
