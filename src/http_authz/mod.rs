//! The HTTP ext_authz mode: the same decision as Check, for proxies that ask over plain HTTP
//! (Istio `envoyExtAuthzHttp`, Envoy `http_service`, nginx `auth_request`, Traefik
//! `forwardAuth`, Caddy `forward_auth`). A check request becomes the `AccessRequest` the gRPC
//! front would have built from Envoy's, [`CheckService`] answers it, and its [`Verdict`] is
//! rendered as HTTP: 200 with the same `x-auth-*` headers on allow, the same status, headers
//! and JSON body on deny. No protobuf in between; one decision path, one rendering: nothing
//! here decides or formats anything itself.
//!
//! What is decided: the check request's own method, target and `Host`, or, with
//! `trust_forwarded`, its `X-Forwarded-Method`, `X-Forwarded-Uri` and `X-Forwarded-Host`,
//! which only a proxy that overwrites any client copy may be trusted to send. A trusted check
//! without exactly one of each is denied (an empty path is an `invalid_path`).

use std::sync::Arc;

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::authz::AccessRequest;
use crate::check::{CheckService, Verdict, REDIRECT_STATUS};

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
    let access = access_request(
        parts.method.as_str(),
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        &parts.headers,
        state.source,
    );
    let verdict = state.service.check(&access).await;
    render(verdict, &parts.headers, &state.service.credential_headers())
}

/// The one value of `name`, if it is sent exactly once and is UTF-8.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The request this check asks about: every header, repeated ones apart, as Envoy sends them
/// to the gRPC front (a value that is not UTF-8 is refused by the decision, never decoded
/// lossily).
pub fn access_request<'a>(
    method: &'a str,
    target: &'a str,
    headers: &'a HeaderMap,
    source: RequestSource,
) -> AccessRequest<'a> {
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
    let mut not_utf8 = None;
    let headers = headers
        .iter()
        .map(|(k, v)| {
            let value = std::str::from_utf8(v.as_bytes()).unwrap_or_else(|_| {
                not_utf8.get_or_insert(k.as_str());
                ""
            });
            (k.as_str(), Cow::Borrowed(value))
        })
        .collect();
    AccessRequest {
        method,
        // Unknown: a check request does not say how the client reached the proxy.
        scheme: "",
        host,
        path,
        headers,
        not_utf8,
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

/// A header from text; its bytes as they are (a cookie may hold UTF-8), refused only when no
/// header can carry them (a control byte).
fn header_pair(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_bytes(name.as_bytes()).ok()?,
        HeaderValue::from_bytes(value.as_bytes()).ok()?,
    ))
}

/// The verdict as HTTP. An allow is a 200 carrying:
/// - its upstream headers, each set once (the identity headers, the decision id; a cleaned
///   `cookie`);
/// - the client headers to remove, named in [`HEADERS_TO_REMOVE`] (Envoy `http_service`);
/// - every credential header of `request` (`credential_headers`) the upstream keeps, with the
///   value it must receive; one it must not receive is absent. A proxy that can only set
///   headers from the answer (nginx's `auth_request_set`) sets each from here, so an absent
///   one clears the client's;
/// - the headers for the client (`set-cookie` of a renewed cookie).
///
/// A denial, or a sign-in redirect, is its status, headers and body.
pub fn render(verdict: Verdict, request: &HeaderMap, credential_headers: &[&str]) -> Response {
    match verdict {
        Verdict::Allow(allowed) => {
            let identity = allowed
                .identity
                .headers
                .iter()
                .map(|(k, v)| (*k, v.as_str()));
            let mut headers = header_map(identity.chain(allowed.request_headers()));
            for name in credential_headers {
                // Stripped, or replaced by the verdict (a cleaned cookie): never the client's
                // value, even when the replacement could not be rendered.
                let removed = allowed
                    .headers_to_remove
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(name));
                let replaced = allowed
                    .request_headers()
                    .any(|(set, _)| set.eq_ignore_ascii_case(name));
                if removed || replaced {
                    continue;
                }
                if let Some((name, value)) = as_sent(request, name) {
                    headers.insert(name, value);
                }
            }
            if !allowed.headers_to_remove.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&allowed.headers_to_remove.join(",")) {
                    headers.insert(HEADERS_TO_REMOVE, v);
                }
            }
            if let Some((name, value)) = allowed
                .set_cookie
                .as_deref()
                .and_then(|c| header_pair("set-cookie", c))
            {
                headers.append(name, value);
            }
            (StatusCode::OK, headers).into_response()
        }
        Verdict::Deny(denied) => {
            let status = StatusCode::from_u16(denied.status).unwrap_or(StatusCode::FORBIDDEN);
            let pairs = denied.headers.iter().map(|(k, v)| (*k, v.as_str()));
            (status, header_map(pairs), Body::from(denied.body)).into_response()
        }
        Verdict::LoginRedirect(redirect) => {
            let status = StatusCode::from_u16(REDIRECT_STATUS).unwrap_or(StatusCode::FOUND);
            (status, header_map(redirect.headers())).into_response()
        }
    }
}

/// `pairs` as headers, each set once.
fn header_map<'a>(pairs: impl IntoIterator<Item = (&'static str, &'a str)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs.into_iter().filter_map(|(k, v)| header_pair(k, v)) {
        headers.insert(name, value);
    }
    headers
}

#[cfg(test)]
mod tests;
