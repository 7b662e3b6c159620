//! Check for browsers, in process: an anonymous navigation on a login host is sent to the
//! login page, everything else keeps the 401; cookie-authenticated unsafe requests need one
//! of our origins (CSRF); on allow the credential stops at the gate (`forward_credential`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use portcullis::authz::Authorizer;
use portcullis::check::CheckService;
use portcullis::config::Config;
use portcullis::identity::Identifier;
use portcullis::keyring;
use portcullis::policy::{PolicyDocument, PolicySnapshot};

const SECRET: &str = "browser-test-secret-0123456789abcdef0123456789";

const POLICY: &str = r#"
permissions:
  notes:read: {activities: [GET /notes, HEAD /notes]}
  notes:write: {activities: [POST /notes, PUT /notes, PATCH /notes, DELETE /notes]}
  relay: {activities: [GET /relay]}
  public: {activities: [GET /healthz]}
roles:
  editor: [notes:read, notes:write, relay]
"#;

const HTML: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
jwt:
  issuer: browser-test
  keys: [{{kid: k, algorithm: HS256, secret_env: BROWSER_TEST_SECRET}}]
login:
  public_url: https://login.portcullis.test
  provider: {{issuer: "https://accounts.example.net", client_id: web}}
  token: {{issuer: browser-test, audience: apps}}
  signing_keys: [{{public_key_file: /nonexistent.pem}}]
  cookie: {{domain: portcullis.test}}
  redirects:
    domains: [portcullis.test]
    origins: ["https://partner.example.net"]
    default: https://app1.portcullis.test/
{extra}
"#
    );
    Config::from_yaml(Path::new("browser.yaml"), &text).unwrap()
}

fn service_with(config: &Config) -> CheckService {
    let keys = keyring::load(&config.jwt, |_| Some(SECRET.to_owned())).unwrap();
    let snapshot = Arc::new(ArcSwapOption::empty());
    let doc = PolicyDocument::from_yaml("policy", POLICY).unwrap();
    snapshot.store(Some(Arc::new(PolicySnapshot::compile(&doc, 1).unwrap())));
    CheckService::new(Arc::new(Authorizer::new(
        snapshot,
        Arc::new(Identifier::new(keys, &config.jwt)),
    )))
    .with_config(config)
    .unwrap()
}

fn service() -> CheckService {
    service_with(&config(""))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_expiring_at(exp: u64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k".to_owned());
    let claims = serde_json::json!({
        "sub": "7", "email": "ed@example.com", "roles": ["editor"],
        "iss": "browser-test", "exp": exp, "jti": "j-1", "sid": "s-1"
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn editor() -> String {
    token_expiring_at(now() + 600)
}

fn expired() -> String {
    token_expiring_at(now() - 3600)
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Allow,
    /// A deny with its HTTP status and reason code.
    Deny(i32, String),
    /// A 302 to this location.
    Redirect(String),
}

fn outcome(res: &CheckResponse) -> Outcome {
    match &res.http_response {
        Some(HttpResponse::OkResponse(_)) => Outcome::Allow,
        Some(HttpResponse::DeniedResponse(d)) => {
            let code = d.status.as_ref().unwrap().code;
            let headers: HashMap<_, _> = d
                .headers
                .iter()
                .map(|h| {
                    let h = h.header.as_ref().unwrap();
                    (h.key.clone(), h.value.clone())
                })
                .collect();
            if code == 302 {
                assert!(d.body.is_empty());
                assert_eq!(headers["cache-control"], "no-store");
                Outcome::Redirect(headers["location"].clone())
            } else {
                let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                assert_eq!(headers["content-type"], "application/json");
                Outcome::Deny(code, body["reason"].as_str().unwrap().to_owned())
            }
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

fn login(original: &str) -> Outcome {
    let mut url = url::Url::parse("https://login.portcullis.test/auth/login").unwrap();
    url.query_pairs_mut().append_pair("redirect_url", original);
    Outcome::Redirect(url.to_string())
}

fn unauthenticated() -> Outcome {
    Outcome::Deny(401, "missing_credential".to_owned())
}

fn invalid() -> Outcome {
    Outcome::Deny(401, "invalid_token".to_owned())
}

async fn run(
    svc: &CheckService,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> CheckResponse {
    // As Envoy sends it (`encode_raw_headers: true`): repeated headers stay apart.
    let mut req = support::check_request(method, host, path, &[]);
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.scheme = "https".to_owned();
    http.header_map = Some(HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    });
    portcullis::grpc::decide(svc, &req).await
}

#[tokio::test]
async fn browser_navigations_go_to_login_everything_else_keeps_the_401() {
    let svc = service();
    let cookie = format!("theme=dark; jwt-token={}", expired());
    let bearer_expired = format!("Bearer {}", expired());
    let app1 = "https://app1.portcullis.test/notes";
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>, Outcome);
    let cases: Vec<Case> = vec![
        // a browser navigating, anonymous
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML)],
            login(app1),
        ),
        (
            "HEAD",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML)],
            login(app1),
        ),
        (
            "GET",
            "APP1.portcullis.test:443",
            "/notes?x=1&y=%2F",
            vec![("accept", HTML), ("sec-fetch-mode", "navigate")],
            login("https://app1.portcullis.test/notes?x=1&y=%2F"),
        ),
        (
            "GET",
            "portcullis.test",
            "/notes",
            vec![("accept", "text/html")],
            login("https://portcullis.test/notes"),
        ),
        (
            "GET",
            "partner.example.net",
            "/notes",
            vec![("accept", HTML)],
            login("https://partner.example.net/notes"),
        ),
        // an expired cookie, alone: back to login too
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("cookie", &cookie)],
            login(app1),
        ),
        // the same expired token as a Bearer: 401, never a redirect
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("authorization", &bearer_expired)],
            invalid(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("authorization", "Bearer not-a-jwt")],
            invalid(),
        ),
        // not a navigation
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", "*/*")],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", "application/json")],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", "application/json, text/html;q=0.5")],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("x-requested-with", "XMLHttpRequest")],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("sec-fetch-mode", "cors")],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![
                ("accept", HTML),
                ("content-type", "application/grpc-web+proto"),
            ],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML), ("x-grpc-web", "1")],
            unauthenticated(),
        ),
        (
            "POST",
            "app1.portcullis.test",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        // hosts without login
        (
            "GET",
            "evil.test",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        (
            "GET",
            "portcullis.test.evil.test",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        (
            "GET",
            "evilportcullis.test",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test:8443",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        (
            "GET",
            "app1.portcullis.test@evil.test",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        (
            "GET",
            "",
            "/notes",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        // a target the redirect allow-list refuses (a malformed escape) is not rebuilt into one
        (
            "GET",
            "app1.portcullis.test",
            "/notes?next=%zz",
            vec![("accept", HTML)],
            unauthenticated(),
        ),
        // percent-encoded characters in the query belong to the app (issue 21, item 5): the
        // target is passed on as received, never decoded into the Location header
        (
            "GET",
            "app1.portcullis.test",
            "/search?q=a%20b&next=%0d%0aSet-Cookie:x",
            vec![("accept", HTML)],
            login("https://app1.portcullis.test/search?q=a%20b&next=%0d%0aSet-Cookie:x"),
        ),
        // a public path is allowed as before; a bad path is still 403
        (
            "GET",
            "app1.portcullis.test",
            "/healthz",
            vec![("accept", HTML)],
            Outcome::Allow,
        ),
        (
            "GET",
            "app1.portcullis.test",
            "//evil.test/notes",
            vec![("accept", HTML)],
            Outcome::Deny(403, "invalid_path".to_owned()),
        ),
    ];
    for (method, host, path, headers, expected) in cases {
        let got = outcome(&run(&svc, method, host, path, &headers).await);
        assert_eq!(got, expected, "{method} {host}{path} {headers:?}");
    }
}

/// Issue 21, item 3: with the apps listed one by one (no parent domain), a sibling host under
/// the cookie domain is no origin of ours: its cookie-borne writes are 403 `csrf`.
#[tokio::test]
async fn an_unlisted_sibling_host_cannot_write_with_the_cookie() {
    let mut listed = config("");
    let redirects = &mut listed.login.as_mut().unwrap().redirects;
    redirects.domains.clear();
    redirects.origins = vec![
        "https://app1.portcullis.test".to_owned(),
        "https://app2.portcullis.test".to_owned(),
    ];
    let svc = service_with(&listed);
    let cookie = format!("jwt-token={}", editor());
    for (origin, expected) in [
        ("https://app2.portcullis.test", Outcome::Allow),
        (
            "https://evil.portcullis.test",
            Outcome::Deny(403, "csrf".to_owned()),
        ),
        (
            "https://login.portcullis.test",
            Outcome::Deny(403, "csrf".to_owned()),
        ),
    ] {
        let headers = vec![("cookie", cookie.as_str()), ("origin", origin)];
        let got = outcome(&run(&svc, "POST", "app1.portcullis.test", "/notes", &headers).await);
        assert_eq!(got, expected, "{origin}");
    }
}

/// Issue 21, item 2: Envoy's TLS listener on a non-default port (10443): a `host:port` entry
/// sends a navigation there to sign in instead of a 401; the same host on another port keeps
/// the 401.
#[tokio::test]
async fn a_host_port_entry_admits_navigations_on_that_port() {
    let mut tls = config("");
    tls.login.as_mut().unwrap().redirects.domains = vec!["app1.portcullis.test:10443".to_owned()];
    let svc = service_with(&tls);
    let html = vec![("accept", HTML)];
    let got = outcome(&run(&svc, "GET", "app1.portcullis.test:10443", "/notes", &html).await);
    assert_eq!(got, login("https://app1.portcullis.test:10443/notes"));
    let got = outcome(&run(&svc, "GET", "app1.portcullis.test:8443", "/notes", &html).await);
    assert_eq!(got, unauthenticated());
}

#[tokio::test]
async fn without_login_configured_a_navigation_keeps_the_401() {
    let mut plain = config("");
    plain.login = None;
    let svc = service_with(&plain);
    let got = outcome(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("accept", HTML)],
        )
        .await,
    );
    assert_eq!(got, unauthenticated());
}

#[tokio::test]
async fn cookie_authenticated_unsafe_requests_need_one_of_our_origins() {
    let svc = service();
    let token = editor();
    let cookie = format!("jwt-token={token}; theme=dark");
    let bearer = format!("Bearer {token}");
    let csrf = || Outcome::Deny(403, "csrf".to_owned());
    let host = "app1.portcullis.test";
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Outcome);
    let cases: Vec<Case> = vec![
        // from our own pages
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "https://app1.portcullis.test"),
            ],
            Outcome::Allow,
        ),
        (
            "PUT",
            vec![
                ("cookie", &cookie),
                ("origin", "https://app2.portcullis.test"),
            ],
            Outcome::Allow,
        ),
        (
            "PATCH",
            vec![
                ("cookie", &cookie),
                ("origin", "https://partner.example.net"),
            ],
            Outcome::Allow,
        ),
        (
            "DELETE",
            vec![
                ("cookie", &cookie),
                ("referer", "https://app1.portcullis.test/notes?x=1"),
            ],
            Outcome::Allow,
        ),
        // from elsewhere, or from nowhere
        (
            "POST",
            vec![("cookie", &cookie), ("origin", "https://evil.test")],
            csrf(),
        ),
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "https://portcullis.test.evil.test"),
            ],
            csrf(),
        ),
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "https://evilportcullis.test"),
            ],
            csrf(),
        ),
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "http://app1.portcullis.test"),
            ],
            csrf(),
        ),
        (
            "POST",
            vec![("cookie", &cookie), ("origin", "null")],
            csrf(),
        ),
        ("POST", vec![("cookie", &cookie), ("origin", "")], csrf()),
        ("PUT", vec![("cookie", &cookie)], csrf()),
        (
            "DELETE",
            vec![
                ("cookie", &cookie),
                ("referer", "https://evil.test/app1.portcullis.test"),
            ],
            csrf(),
        ),
        // Origin wins over Referer
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "https://evil.test"),
                ("referer", "https://app1.portcullis.test/"),
            ],
            csrf(),
        ),
        (
            "POST",
            vec![
                ("cookie", &cookie),
                ("origin", "https://app1.portcullis.test"),
                ("origin", "https://evil.test"),
            ],
            csrf(),
        ),
        // safe methods need nothing
        (
            "GET",
            vec![("cookie", &cookie), ("origin", "https://evil.test")],
            Outcome::Allow,
        ),
        ("HEAD", vec![("cookie", &cookie)], Outcome::Allow),
        // Bearer is exempt (a browser cannot add it cross-site), also with the same cookie
        ("POST", vec![("authorization", &bearer)], Outcome::Allow),
        (
            "POST",
            vec![("authorization", &bearer), ("origin", "https://evil.test")],
            Outcome::Allow,
        ),
        (
            "POST",
            vec![
                ("authorization", &bearer),
                ("cookie", &cookie),
                ("origin", "https://evil.test"),
            ],
            Outcome::Allow,
        ),
    ];
    for (method, headers, expected) in cases {
        let got = outcome(&run(&svc, method, host, "/notes", &headers).await);
        assert_eq!(got, expected, "{method} {headers:?}");
    }
}

/// The headers an allow sets, and those it removes.
fn forwarded(res: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    match &res.http_response {
        Some(HttpResponse::OkResponse(ok)) => (
            ok.headers
                .iter()
                .map(|h| {
                    let h = h.header.as_ref().unwrap();
                    (h.key.clone(), h.value.clone())
                })
                .collect(),
            ok.headers_to_remove.clone(),
        ),
        other => panic!("expected an allow, got {other:?}"),
    }
}

#[tokio::test]
async fn the_credential_stops_at_the_gate_unless_forwarding_is_opted_in() {
    let svc = service();
    let token = editor();
    let bearer = format!("Bearer {token}");
    let both = format!("theme=dark; jwt-token={token}; lang=fr");
    let only = format!("jwt-token={token}");

    let (set, removed) = forwarded(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("authorization", &bearer)],
        )
        .await,
    );
    assert_eq!(removed, ["authorization"]);
    assert!(!set.contains_key("cookie"));

    let (set, removed) = forwarded(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("cookie", &both)],
        )
        .await,
    );
    assert_eq!(removed, Vec::<String>::new());
    assert_eq!(set["cookie"], "theme=dark; lang=fr");

    // split over two Cookie headers (HTTP/2), the others are kept in one
    let (set, _) = forwarded(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("cookie", "a=1"), ("cookie", &only)],
        )
        .await,
    );
    assert_eq!(set["cookie"], "a=1");

    let (set, removed) = forwarded(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("cookie", &only)],
        )
        .await,
    );
    assert_eq!(removed, ["cookie"]);
    assert!(!set.contains_key("cookie"));

    // anonymous: nothing of ours to take; other cookies untouched
    let (set, removed) = forwarded(
        &run(
            &svc,
            "GET",
            "app1.portcullis.test",
            "/healthz",
            &[("cookie", "a=1")],
        )
        .await,
    );
    assert!(removed.is_empty() && !set.contains_key("cookie"));

    // opted in per host and per permission
    let relay = service_with(&config(
        "forward_credential: {hosts: [relay.portcullis.test], permissions: [relay]}",
    ));
    for (host, path) in [
        ("Relay.portcullis.test:443", "/notes"),
        ("app1.portcullis.test", "/relay"),
    ] {
        let (set, removed) = forwarded(
            &run(
                &relay,
                "GET",
                host,
                path,
                &[("authorization", &bearer), ("cookie", &both)],
            )
            .await,
        );
        assert!(removed.is_empty(), "{host}{path}: {removed:?}");
        assert!(!set.contains_key("cookie"), "{host}{path}");
    }
    let (_, removed) = forwarded(
        &run(
            &relay,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("authorization", &bearer)],
        )
        .await,
    );
    assert_eq!(removed, ["authorization"]);

    let everyone = service_with(&config("forward_credential: {default: true}"));
    let (set, removed) = forwarded(
        &run(
            &everyone,
            "GET",
            "app1.portcullis.test",
            "/notes",
            &[("authorization", &bearer), ("cookie", &both)],
        )
        .await,
    );
    assert!(removed.is_empty() && !set.contains_key("cookie"));
}
