//! The admin endpoint, for probes and operators: `/status` (JSON: policy version, snapshot
//! age, store reachability, last error, log lines dropped, login provider state), `/ready` (200 once a snapshot is
//! loaded and the login provider's and outside issuers' keys fetched), `/live` and `/bundle`
//! (the in-process filter's bundle: users, roles, token digests, public keys).
//! Plain HTTP, bound to loopback by default.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::{self, Metrics};
use super::reload::ReloadStatus;
use super::LogDrops;
use crate::login::LoginService;

impl ReloadStatus {
    fn to_json(&self) -> serde_json::Value {
        let unix = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        serde_json::json!({
            "serving": self.version.is_some(),
            "policy_version": self.version,
            "snapshot_loaded_at": self.loaded_at.map(unix),
            "snapshot_age_seconds": self.loaded_at.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()),
            "store_reachable": self.store_reachable,
            "last_error": self.last_error,
            "candidate": (self.candidate_stored_at.is_some() || self.candidate_error.is_some()).then(|| serde_json::json!({
                "evaluated": self.candidate_stored_at.is_some(),
                "stored_at": self.candidate_stored_at,
                "error": self.candidate_error,
            })),
        })
    }
}

/// What the admin endpoint reports from.
pub(super) struct Admin {
    pub status: Arc<Mutex<ReloadStatus>>,
    pub login: Option<Arc<LoginService>>,
    pub issuers_ready: Vec<Arc<std::sync::atomic::AtomicBool>>,
    pub log_drops: LogDrops,
    pub metrics: Arc<Metrics>,
    pub bundle: Arc<super::bundle::BundleSource>,
}

/// The admin endpoint: `/status` (JSON), `/ready` (200 once a snapshot is loaded), `/live`,
/// `/metrics` (Prometheus, OpenMetrics text).
pub(super) async fn serve_admin(
    listener: TcpListener,
    admin: Admin,
    mut stop: watch::Receiver<bool>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let Admin {
        status,
        login,
        issuers_ready,
        log_drops,
        metrics,
        bundle,
    } = admin;
    let for_status = status.clone();
    let for_status_login = login.clone();
    let app = axum::Router::new()
        .route(
            "/status",
            get(move || {
                let mut body = for_status.lock().map(|s| s.to_json()).unwrap_or_default();
                body["log_lines_dropped"] = log_drops.count().into();
                if let Some(login) = &for_status_login {
                    body["login"] = serde_json::json!({
                        "provider_ready": login.is_ready(),
                        "provider_key_fetches": login.provider().map(|p| p.keys.fetch_count()),
                    });
                }
                async move { axum::Json(body) }
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
            get(move |headers: axum::http::HeaderMap| {
                let response = bundle.respond(&headers);
                async move { response }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                        body,
                    )
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
