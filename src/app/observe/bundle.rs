//! `GET /bundle` on the admin endpoint: the in-process filter's bundle (`authz::Bundle`) of
//! the serving snapshot, as JSON with a strong `ETag` (the SHA-256 of the body). A filter that
//! sends the `If-None-Match` it last got and is current gets `304` with no body, so polling
//! every few hundred milliseconds costs next to nothing; the body is built once per snapshot.
//! It names users, roles and token digests (never a secret): served only where the admin
//! endpoint is, loopback by default. `503` with one line when there is no snapshot yet or the
//! configuration cannot make a bundle (a shared HMAC key, keys fetched from a URL).

use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::authz::{Bundle, BundleJwt, ForwardCredentialConfig, SnapshotHandle};
use crate::config::Config;

/// What every bundle of this configuration carries besides the snapshot.
#[derive(Debug, Clone)]
struct Settings {
    jwt: BundleJwt,
    api_token_header: String,
    forward_credential: ForwardCredentialConfig,
}

/// One snapshot's bundle, encoded.
struct Encoded {
    serial: u64,
    etag: String,
    body: Arc<[u8]>,
}

/// Serves the bundle of whatever snapshot is serving.
pub struct BundleSource {
    snapshot: SnapshotHandle,
    /// Why this configuration has no bundle, when it has none.
    settings: Result<Settings, String>,
    last: Mutex<Option<Arc<Encoded>>>,
}

impl BundleSource {
    pub fn new(config: &Config, snapshot: SnapshotHandle) -> Self {
        let settings = match crate::keyring::public_jwks(&config.jwt) {
            Ok(jwks) => Ok(Settings {
                jwt: BundleJwt {
                    jwks,
                    issuer: config.jwt.issuer.clone(),
                    audience: config.jwt.audience.clone(),
                    leeway_seconds: config.jwt.leeway.as_secs(),
                    cookie_name: config.jwt.cookie_name.clone(),
                    permissions_from: config.jwt.permissions_from,
                    subject_claim: config.jwt.subject_claim,
                },
                api_token_header: config.api_tokens.header.clone(),
                forward_credential: config.forward_credential.clone(),
            }),
            Err(e) => Err(crate::error_chain(&e)),
        };
        if let Err(why) = &settings {
            tracing::info!(reason = %why, "no in-process bundle for this configuration");
        }
        BundleSource {
            snapshot,
            settings,
            last: Mutex::new(None),
        }
    }

    /// The serving snapshot's bundle, encoded once per snapshot.
    fn current(&self) -> Result<Arc<Encoded>, String> {
        let settings = self.settings.as_ref().map_err(Clone::clone)?;
        let Some(snapshot) = self.snapshot.load_full() else {
            return Err("no policy snapshot loaded".to_owned());
        };
        let mut last = self
            .last
            .lock()
            .map_err(|_| "bundle cache poisoned".to_owned())?;
        if let Some(done) = last.as_ref().filter(|e| e.serial == snapshot.serial()) {
            return Ok(done.clone());
        }
        let bundle = Bundle::of_snapshot(
            &snapshot,
            settings.jwt.clone(),
            &settings.api_token_header,
            settings.forward_credential.clone(),
        );
        let body = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
        let digest = Sha256::digest(&body);
        let etag = crate::value::hex(&digest);
        let encoded = Arc::new(Encoded {
            serial: snapshot.serial(),
            etag: format!("\"{etag}\""),
            body: body.into(),
        });
        *last = Some(encoded.clone());
        Ok(encoded)
    }

    /// The answer to `GET /bundle`.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        let encoded = match self.current() {
            Ok(e) => e,
            Err(why) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no bundle: {why}\n"),
                )
                    .into_response()
            }
        };
        let have = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if have == Some(encoded.etag.as_str()) {
            return (
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, encoded.etag.clone())],
            )
                .into_response();
        }
        (
            [
                (header::ETAG, encoded.etag.clone()),
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (header::CACHE_CONTROL, "no-store".to_owned()),
            ],
            encoded.body.to_vec(),
        )
            .into_response()
    }
}
