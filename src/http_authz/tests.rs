#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::authz::{Allow, Stripping};
use crate::check::{Allowed, Denied, Identity, LoginRedirect, PerRequest};

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

fn line<'a>(access: &AccessRequest<'a>) -> (&'a str, &'a str, &'a str) {
    (access.method, access.path, access.host)
}

#[test]
fn untrusted_checks_ignore_forwarded_headers() {
    let h = headers(&[
        ("host", "app.example.com"),
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "other.example.com"),
    ]);
    let access = access_request("POST", "/api/v1/roles?x=1", &h, RequestSource::CheckRequest);
    assert_eq!(
        line(&access),
        ("POST", "/api/v1/roles?x=1", "app.example.com")
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
    let access = access_request("GET", "/_auth", &h, RequestSource::Forwarded);
    assert_eq!(line(&access), ("PUT", "/api/v1/roles", "app.example.com"));
    // Repeated or missing: nothing to decide on, so an empty path (denied).
    let twice = headers(&[
        ("x-forwarded-uri", "/healthz"),
        ("x-forwarded-uri", "/api/v1/roles"),
        ("x-forwarded-method", "GET"),
        ("x-forwarded-host", "app.example.com"),
    ]);
    let access = access_request("GET", "/healthz", &twice, RequestSource::Forwarded);
    assert_eq!(line(&access), ("", "", ""));
    let missing = headers(&[("x-forwarded-uri", "/healthz")]);
    let access = access_request("GET", "/healthz", &missing, RequestSource::Forwarded);
    assert_eq!(line(&access).1, "");
}

#[test]
fn repeated_headers_stay_apart() {
    let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
    let access = access_request("GET", "/", &h, RequestSource::CheckRequest);
    let values: Vec<_> = access
        .headers
        .iter()
        .filter(|(k, _)| *k == "authorization")
        .map(|(_, v)| v.as_ref())
        .collect();
    assert_eq!(values, ["Bearer a", "Bearer b"]);
}

#[test]
fn a_value_that_is_not_utf8_is_named_not_decoded() {
    let mut h = headers(&[("x-trace", "1")]);
    h.append("x-bad", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let access = access_request("GET", "/", &h, RequestSource::CheckRequest);
    assert_eq!(access.not_utf8, Some("x-bad"));
    let bad: Vec<_> = access
        .headers
        .iter()
        .filter(|(k, _)| *k == "x-bad")
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].1, "");
}

/// An anonymous allow (its identity sets `x-auth-subject-type` and `x-auth-permissions`),
/// with `remove` to take out, `cookie` for the upstream and `set_cookie` for the client.
fn allowed(remove: &[&str], cookie: Option<&str>, set_cookie: Option<&str>) -> Verdict {
    let allow = Allow {
        principal: None,
        roles: Vec::new(),
        permissions: vec![Arc::from("health:read")],
        matched_permission: "health:read".to_owned(),
        matched_activity: "health".to_owned(),
        policy_version: 1,
        snapshot_serial: 1,
    };
    let extra = PerRequest {
        stripping: Stripping::default(),
        set_cookie: set_cookie.map(str::to_owned),
    };
    let mut allowed = Allowed::new(
        Arc::new(Identity::of(&allow)),
        &allow,
        &AccessRequest::default(),
        "d-1",
        extra,
    );
    allowed.headers_to_remove = remove.iter().map(|h| (*h).to_owned()).collect();
    allowed.cookie = cookie.map(str::to_owned);
    Verdict::Allow(allowed)
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
    let answer = allowed(
        &["authorization", "x-auth-anything"],
        Some("theme=dark; z=2"),
        None,
    );
    let r = render(answer, &request, &CREDENTIAL_HEADERS);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(values(&r, "authorization"), Vec::<String>::new());
    assert_eq!(values(&r, "cookie"), vec!["theme=dark; z=2"]);
    assert_eq!(values(&r, "x-api-token"), Vec::<String>::new());
    assert_eq!(values(&r, "x-trace"), Vec::<String>::new());
    assert_eq!(values(&r, "x-auth-subject-type"), vec!["anonymous"]);
    assert_eq!(values(&r, "x-auth-permissions"), vec!["health:read"]);
    assert_eq!(values(&r, "x-auth-decision-id"), vec!["d-1"]);
    assert_eq!(
        values(&r, HEADERS_TO_REMOVE),
        vec!["authorization,x-auth-anything"]
    );
    assert_eq!(values(&r, "set-cookie"), Vec::<String>::new());
}

#[test]
fn a_cleaned_cookie_never_falls_back_to_the_clients() {
    let request = headers(&[("cookie", "theme=dark; jwt-token=a.b.c")]);
    // A cookie value in UTF-8 is carried as its bytes.
    let r = render(
        allowed(&[], Some("theme=café"), None),
        &request,
        &CREDENTIAL_HEADERS,
    );
    let cookies: Vec<&[u8]> = r
        .headers()
        .get_all("cookie")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(cookies, vec!["theme=café".as_bytes()]);
    // One no header can carry is left out, never replaced by the client's (with its token).
    let r = render(
        allowed(&[], Some("theme=\u{1}"), None),
        &request,
        &CREDENTIAL_HEADERS,
    );
    assert_eq!(r.headers().get_all("cookie").iter().count(), 0);
}

#[test]
fn an_allow_states_the_credential_headers_the_upstream_keeps() {
    // Forwarded (`forward_credential`), or not a credential at all: as the client sent them,
    // repeated cookie headers joined as one cookie string.
    let request = headers(&[
        ("authorization", "Bearer a.b.c"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x-api-token", "pc_x"),
    ]);
    let r = render(
        allowed(&[], None, Some("jwt-token=n; Secure")),
        &request,
        &CREDENTIAL_HEADERS,
    );
    assert_eq!(values(&r, "authorization"), vec!["Bearer a.b.c"]);
    assert_eq!(values(&r, "cookie"), vec!["a=1; b=2"]);
    assert_eq!(values(&r, "x-api-token"), vec!["pc_x"]);
    assert_eq!(values(&r, HEADERS_TO_REMOVE), Vec::<String>::new());
    // A renewed cookie goes to the client.
    assert_eq!(values(&r, "set-cookie"), vec!["jwt-token=n; Secure"]);
}

#[tokio::test]
async fn a_deny_is_its_status_headers_and_body_and_states_no_credential() {
    let request = headers(&[("authorization", "Bearer a.b.c"), ("cookie", "a=1")]);
    let denied = Denied {
        reason: crate::authz::Reason::MissingCredential,
        status: 401,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            (
                "www-authenticate",
                r#"Bearer realm="portcullis""#.to_owned(),
            ),
            ("x-auth-decision-id", "d-2".to_owned()),
        ],
        body: r#"{"reason":"missing_credential"}"#.to_owned(),
        decision_id: "d-2".to_owned(),
    };
    let r = render(Verdict::Deny(denied), &request, &CREDENTIAL_HEADERS);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(values(&r, "authorization"), Vec::<String>::new());
    assert_eq!(values(&r, "cookie"), Vec::<String>::new());
    assert_eq!(
        values(&r, "www-authenticate"),
        [r#"Bearer realm="portcullis""#]
    );
    assert_eq!(values(&r, "x-auth-decision-id"), ["d-2"]);
    let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], br#"{"reason":"missing_credential"}"#);
}

#[test]
fn a_sign_in_redirect_is_a_302_never_cached() {
    let redirect = LoginRedirect {
        location: "https://login.example.com/auth/login?rd=x".to_owned(),
        decision_id: "d-3".to_owned(),
    };
    let r = render(
        Verdict::LoginRedirect(redirect),
        &HeaderMap::new(),
        &CREDENTIAL_HEADERS,
    );
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        values(&r, "location"),
        ["https://login.example.com/auth/login?rd=x"]
    );
    assert_eq!(values(&r, "cache-control"), ["no-store"]);
    assert_eq!(values(&r, "x-auth-decision-id"), ["d-3"]);
}
