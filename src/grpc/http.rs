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
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn line(check: &CheckRequest) -> (String, String, String) {
        let http = check
            .attributes
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .http
            .as_ref()
            .unwrap();
        (http.method.clone(), http.path.clone(), http.host.clone())
    }

    #[test]
    fn untrusted_checks_ignore_forwarded_headers() {
        let h = headers(&[
            ("host", "app.example.com"),
            ("x-forwarded-uri", "/healthz"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "other.example.com"),
        ]);
        let check = check_request("POST", "/api/v1/roles?x=1", &h, RequestSource::CheckRequest);
        assert_eq!(
            line(&check),
            (
                "POST".into(),
                "/api/v1/roles?x=1".into(),
                "app.example.com".into()
            )
        );
    }

    #[test]
    fn trusted_checks_read_forwarded_headers_exactly_once() {
        let h = headers(&[
            ("host", "portcullis"),
            ("x-forwarded-uri", "/api/v1/roles"),
            ("x-forwarded-method", "PUT"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let check = check_request("GET", "/_auth", &h, RequestSource::Forwarded);
        assert_eq!(
            line(&check),
            (
                "PUT".into(),
                "/api/v1/roles".into(),
                "app.example.com".into()
            )
        );
        // Repeated or missing: nothing to decide on, so an empty path (denied).
        let twice = headers(&[
            ("x-forwarded-uri", "/healthz"),
            ("x-forwarded-uri", "/api/v1/roles"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let check = check_request("GET", "/healthz", &twice, RequestSource::Forwarded);
        assert_eq!(line(&check), (String::new(), String::new(), String::new()));
        let missing = headers(&[("x-forwarded-uri", "/healthz")]);
        let check = check_request("GET", "/healthz", &missing, RequestSource::Forwarded);
        assert_eq!(line(&check).1, "");
    }

    fn ok(set: &[(&str, &str)], remove: &[&str], client: &[(&str, &str)]) -> CheckResponse {
        use envoy_types::ext_authz::v3::pb::OkHttpResponse;
        let option = |(k, v): &(&str, &str)| core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        CheckResponse {
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: set.iter().map(option).collect(),
                headers_to_remove: remove.iter().map(|h| (*h).to_owned()).collect(),
                response_headers_to_add: client.iter().map(option).collect(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn values(response: &Response, name: &str) -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "x-api-token"];

    #[test]
    fn an_allow_leaves_out_the_credential_it_strips() {
        let request = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "theme=dark; jwt-token=a.b.c"),
            ("cookie", "z=2"),
            ("x-trace", "1"),
        ]);
        let answer = ok(
            &[("x-auth-user-id", "7"), ("cookie", "theme=dark; z=2")],
            &["authorization", "x-auth-anything"],
            &[],
        );
        let r = render(answer, &request, &CREDENTIAL_HEADERS);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(values(&r, "authorization"), Vec::<String>::new());
        assert_eq!(values(&r, "cookie"), vec!["theme=dark; z=2"]);
        assert_eq!(values(&r, "x-api-token"), Vec::<String>::new());
        assert_eq!(values(&r, "x-trace"), Vec::<String>::new());
        assert_eq!(values(&r, "x-auth-user-id"), vec!["7"]);
        assert_eq!(
            values(&r, HEADERS_TO_REMOVE),
            vec!["authorization,x-auth-anything"]
        );
    }

    #[test]
    fn an_allow_states_the_credential_headers_the_upstream_keeps() {
        // Forwarded (`forward_credential`), or not a credential at all: as the client sent
        // them, repeated cookie headers joined as one cookie string.
        let request = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-api-token", "pc_x"),
        ]);
        let r = render(
            ok(&[], &[], &[("set-cookie", "jwt-token=n; Secure")]),
            &request,
            &CREDENTIAL_HEADERS,
        );
        assert_eq!(values(&r, "authorization"), vec!["Bearer a.b.c"]);
        assert_eq!(values(&r, "cookie"), vec!["a=1; b=2"]);
        assert_eq!(values(&r, "x-api-token"), vec!["pc_x"]);
        assert_eq!(values(&r, HEADERS_TO_REMOVE), Vec::<String>::new());
        // A renewed cookie goes to the client.
        assert_eq!(values(&r, "set-cookie"), vec!["jwt-token=n; Secure"]);
        // A deny states nothing of them.
        let denied = CheckResponse {
            http_response: Some(HttpResponse::DeniedResponse(Default::default())),
            ..Default::default()
        };
        let r = render(denied, &request, &CREDENTIAL_HEADERS);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(values(&r, "authorization"), Vec::<String>::new());
        assert_eq!(values(&r, "cookie"), Vec::<String>::new());
    }

    #[test]
    fn repeated_headers_stay_apart() {
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        let check = check_request("GET", "/", &h, RequestSource::CheckRequest);
        let http = check.attributes.unwrap().request.unwrap().http.unwrap();
        let values: Vec<_> = http
            .header_map
            .unwrap()
            .headers
            .into_iter()
            .filter(|h| h.key == "authorization")
            .map(|h| h.raw_value)
            .collect();
        assert_eq!(values, vec![b"Bearer a".to_vec(), b"Bearer b".to_vec()]);
    }
}
