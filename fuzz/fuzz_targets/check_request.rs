//! `CheckRequest` -> decision, end to end through `grpc::decide` over the example
//! policy: any request, with or without a validly signed token carrying fuzzed claims, gets a
//! well-formed answer. An allow has a canonical path, sets only `x-auth-*` headers, each once,
//! with overwrite and values Envoy accepts; a deny is 400, 401, 403 or 503 with a JSON reason.
#![no_main]

use arbitrary::Arbitrary;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::canonicalize;

#[derive(Debug, Arbitrary)]
struct Input {
    method: Method,
    host: Host,
    path: String,
    /// Sent in `header_map` (raw values) when true, else in the legacy map.
    raw_headers: bool,
    headers: Vec<(HeaderName, Vec<u8>)>,
    token: Option<Claims>,
    no_http: bool,
}

#[derive(Debug, Arbitrary)]
enum Method {
    Get,
    Post,
    Put,
    Head,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Host {
    App,
    Allocations,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum HeaderName {
    Authorization,
    Cookie,
    ApiToken,
    XAuth(String),
    Other(String),
}

/// Claims of a token signed with the configured key; where it is presented.
#[derive(Debug, Arbitrary)]
struct Claims {
    sub: String,
    email: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    permissions: Vec<String>,
    jti: Option<String>,
    in_cookie: bool,
}

fn build(input: &Input) -> CheckRequest {
    if input.no_http {
        return CheckRequest {
            attributes: Some(AttributeContext::default()),
        };
    }
    let (_, _, keys) = portcullis_fuzz::service();
    let mut headers: Vec<(String, Vec<u8>)> = input
        .headers
        .iter()
        .map(|(n, v)| {
            let name = match n {
                HeaderName::Authorization => "authorization".to_owned(),
                HeaderName::Cookie => "cookie".to_owned(),
                HeaderName::ApiToken => "x-api-token".to_owned(),
                HeaderName::XAuth(s) => format!("x-auth-{s}"),
                HeaderName::Other(s) => s.clone(),
            };
            (name, v.clone())
        })
        .collect();
    if let Some(c) = &input.token {
        let now = portcullis_fuzz::now();
        let claims = serde_json::json!({
            "sub": c.sub, "email": c.email, "name": c.name, "roles": c.roles,
            "permissions": c.permissions, "jti": c.jti, "iss": portcullis_fuzz::ISSUER,
            "aud": portcullis_fuzz::AUDIENCE, "iat": now, "exp": now + 300,
        });
        let token = keys.mint(&claims).expect("mint");
        headers.push(if c.in_cookie {
            (
                "cookie".to_owned(),
                format!("jwt-token={token}").into_bytes(),
            )
        } else {
            (
                "authorization".to_owned(),
                format!("Bearer {token}").into_bytes(),
            )
        });
    }
    let method = match &input.method {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Other(s) => s.clone(),
    };
    let host = match &input.host {
        Host::App => "app.example.com".to_owned(),
        Host::Allocations => "allocations.example.com".to_owned(),
        Host::Other(s) => s.clone(),
    };
    let mut http = attribute_context::HttpRequest {
        method,
        host,
        path: input.path.clone(),
        ..Default::default()
    };
    if input.raw_headers {
        http.header_map = Some(HeaderMap {
            headers: headers
                .into_iter()
                .map(|(key, raw_value)| HeaderValue {
                    key,
                    raw_value,
                    ..Default::default()
                })
                .collect(),
        });
    } else {
        http.headers = headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// What Envoy accepts in a header value: visible ASCII, space and tab.
fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fuzz_target!(|input: Input| {
    let (runtime, service, _) = portcullis_fuzz::service();
    let request = build(&input);
    let response = runtime.block_on(portcullis::grpc::decide(service, &request));
    let status = response.status.as_ref().expect("a status").code;
    match response.http_response.as_ref().expect("an http response") {
        HttpResponse::OkResponse(ok) => {
            assert_eq!(status, 0);
            assert!(!input.no_http, "a request without a path was allowed");
            assert!(
                canonicalize(&input.path).is_ok(),
                "allowed {:?}",
                input.path
            );
            let mut names: Vec<&str> = Vec::new();
            for h in &ok.headers {
                let hv = h.header.as_ref().expect("header");
                assert!(hv.key.starts_with("x-auth-"), "sets {:?}", hv.key);
                assert!(valid_header_value(&hv.value), "{}: {:?}", hv.key, hv.value);
                assert_eq!(h.append_action, 2, "{} is not overwritten", hv.key);
                assert!(!names.contains(&hv.key.as_str()), "{} set twice", hv.key);
                names.push(&hv.key);
            }
            for removed in &ok.headers_to_remove {
                assert!(
                    removed.starts_with("x-auth-") && !names.contains(&removed.as_str()),
                    "removes {removed:?}"
                );
            }
        }
        HttpResponse::DeniedResponse(denied) => {
            assert_ne!(status, 0);
            let code = denied.status.as_ref().expect("http status").code;
            assert!([400, 401, 403, 503].contains(&code), "status {code}");
            let body: serde_json::Value =
                serde_json::from_str(&denied.body).expect("deny body is JSON");
            assert!(body["reason"].is_string(), "{}", denied.body);
            for h in &denied.headers {
                let hv = h.header.as_ref().expect("header");
                assert!(valid_header_value(&hv.value), "{}: {:?}", hv.key, hv.value);
            }
        }
        HttpResponse::ErrorResponse(_) => panic!("an error response"),
    }
});
