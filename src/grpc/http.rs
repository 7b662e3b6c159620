//! The HTTP ext_authz mode: the same decision as Check, for proxies that ask over plain HTTP
//! (Istio `envoyExtAuthzHttp`, Envoy `http_service`, nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`). A check request becomes the `CheckRequest` Envoy
//! would have sent, [`CheckService`] decides it, and its `CheckResponse` is rendered as HTTP:
//! 200 with the same `x-auth-*` headers on allow, the same status, headers and JSON body on
//! deny. One decision path, one rendering: nothing here decides or formats anything itself.
//!
//! What is decided: the check request's own method, target and `Host`, or, with
//! `trust_forwarded`, its `X-Forwarded-Method`, `X-Forwarded-Uri` and `X-Forwarded-Host`,
//! which only a proxy that overwrites any client copy may be trusted to send. A trusted check
//! without exactly one of each is denied (an empty path is an `invalid_path`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};

use super::CheckService;

/// The header an HTTP authorization server names, comma-separated, the request headers Envoy
/// must remove before forwarding (Envoy's `http_service` honours it; the gRPC answer's
/// `headers_to_remove`).
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// The forwarded request line a trusted proxy sends with each check.
pub const FORWARDED_METHOD: &str = "x-forwarded-method";
pub const FORWARDED_URI: &str = "x-forwarded-uri";
pub const FORWARDED_HOST: &str = "x-forwarded-host";

/// Where the request to decide is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestSource {
    /// The check request's own method, target and `Host` (Envoy `http_service`, Istio).
    CheckRequest,
    /// `X-Forwarded-Method`/`-Uri`/`-Host`, set by the proxy (nginx, Traefik, Caddy).
    Forwarded,
}

#[derive(Clone)]
struct HttpAuthz {
    service: Arc<CheckService>,
    source: RequestSource,
}

/// Every method and path is a check: the router has only a fallback.
pub fn router(service: Arc<CheckService>, source: RequestSource) -> Router {
    Router::new()
        .fallback(check)
        .with_state(HttpAuthz { service, source })
}

async fn check(State(state): State<HttpAuthz>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let check = check_request(
        parts.method.as_str(),
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        &parts.headers,
        state.source,
    );
    let answer = state.service.decide(&check).await;
    render(answer, &parts.headers, &state.service.credential_headers())
}

/// The one value of `name`, if it is sent exactly once and is UTF-8.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The `CheckRequest` Envoy would send for this check: every header, repeated ones apart and
/// values as raw bytes (a non-UTF-8 value is refused by the decision, not decoded lossily).
pub fn check_request(
    method: &str,
    target: &str,
    headers: &HeaderMap,
    source: RequestSource,
) -> CheckRequest {
    let (method, path, host) = match source {
        RequestSource::CheckRequest => (
            method,
            target,
            single(headers, axum::http::header::HOST.as_str()).unwrap_or(""),
        ),
        RequestSource::Forwarded => match (
            single(headers, FORWARDED_METHOD),
            single(headers, FORWARDED_URI),
            single(headers, FORWARDED_HOST),
        ) {
            (Some(m), Some(p), Some(h)) => (m, p, h),
            // Canonicalization refuses an empty path: a 403 invalid_path.
            _ => ("", "", ""),
        },
    };
    let header_map = core::HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| core::HeaderValue {
                key: k.as_str().to_owned(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: host.to_owned(),
                    header_map: Some(header_map),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The client's `name` header as one value: repeated `cookie` headers joined as one cookie
/// string, any other repeated header comma-joined (as a proxy would).
fn as_sent(request: &HeaderMap, name: &str) -> Option<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let separator: &[u8] = if name == axum::http::header::COOKIE {
        b"; "
    } else {
        b", "
    };
    let values: Vec<&[u8]> = request
        .get_all(&name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.is_empty() {
        return None;
    }
    let value = HeaderValue::from_bytes(&values.join(separator)).ok()?;
    Some((name, value))
}

fn header_pair(h: &core::HeaderValueOption) -> Option<(HeaderName, HeaderValue)> {
    let h = h.header.as_ref()?;
    let value = if h.raw_value.is_empty() {
        HeaderValue::from_str(&h.value).ok()?
    } else {
        HeaderValue::from_bytes(&h.raw_value).ok()?
    };
    Some((HeaderName::from_bytes(h.key.as_bytes()).ok()?, value))
}

/// Envoy's answer as HTTP. An OK is a 200 carrying:
/// - its upstream headers, each set once (the identity headers; a cleaned `cookie`);
/// - the client headers to remove, named in [`HEADERS_TO_REMOVE`] (Envoy `http_service`);
/// - every credential header of `request` (`credential_headers`) the upstream keeps, with the
///   value it must receive; one it must not receive is absent. A proxy that can only set
///   headers from the answer (nginx's `auth_request_set`) sets each from here, so an absent
///   one clears the client's;
/// - the headers for the client (`set-cookie` of a renewed cookie).
///
/// A denial is its status, headers and body. Anything else (no answer at all) is a 503.
pub fn render(
    response: CheckResponse,
    request: &HeaderMap,
    credential_headers: &[&str],
) -> Response {
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            let mut headers = HeaderMap::new();
            for (name, value) in ok.headers.iter().filter_map(header_pair) {
                headers.insert(name, value);
            }
            for name in credential_headers {
                let removed = ok
                    .headers_to_remove
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(name));
                if removed || headers.contains_key(*name) {
                    continue;
                }
                if let Some((name, value)) = as_sent(request, name) {
                    headers.insert(name, value);
                }
            }
            if !ok.headers_to_remove.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&ok.headers_to_remove.join(",")) {
                    headers.insert(HEADERS_TO_REMOVE, v);
                }
            }
            for (name, value) in ok.response_headers_to_add.iter().filter_map(header_pair) {
                headers.append(name, value);
            }
            (StatusCode::OK, headers).into_response()
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let status = denied
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::FORBIDDEN);
            let mut headers = HeaderMap::new();
            for (name, value) in denied.headers.iter().filter_map(header_pair) {
                headers.insert(name, value);
            }
            (status, headers, Body::from(denied.body)).into_response()
        }
        Some(HttpResponse::ErrorResponse(_)) | None => {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
