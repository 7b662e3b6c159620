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
