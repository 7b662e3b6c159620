//! Properties that must hold for every input, checked with proptest (part of `make test`):
//!
//! - canonicalization is idempotent: a canonical path, written back as a request target,
//!   canonicalizes to itself, and the query never changes it;
//! - an accepted path never contains a construct that is refused;
//! - no request makes `check` panic or return a gRPC error: it always answers with a
//!   well-formed CheckResponse;
//! - an empty policy denies everything, whoever asks;
//! - adding a permission to a caller never turns an allow into a deny;
//! - the snapshot's bucketed evaluation agrees with a plain scan of every activity.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use jsonwebtoken::Algorithm;
use portcullis::authz::{decide_with, Authorizer, Decision, PermissionSource};
use portcullis::check::CheckService;
use portcullis::identity::{
    ClaimRules, Identifier, JwtSettings, KeySet, Principal, SigningKey, VerifyingKey,
};
use portcullis::policy::document::PermissionSpec;
use portcullis::policy::path::{canonicalize, normalize_host, PathError};
use portcullis::policy::{Activity, Method, PolicyDocument, PolicySnapshot};
use proptest::prelude::*;

/// `n` cases, or `PROPTEST_CASES` when set (for a longer hunt: `PROPTEST_CASES=20000
/// cargo test --release --test properties`).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

const SECRET: &[u8] = b"properties-secret-0123456789abcdef0123456789";
const ISSUER: &str = "properties";
const POLICY: &str = include_str!("../examples/policy.yaml");

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Pieces attackers and normalizers care about, to be glued into request targets.
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "/", "//", "/.", "/..", "/./", "/../", ".", "..", "...", "a", "B", "api", "v1",
            "roles", "%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%252F", "%00", "%0a", "%7f",
            "%20", "%41", "%7e", "%C3%A9", "%c0%af", "%FF", "%e2%82%ac", "%3F", "%23", "%3B",
            "%", "%z", "%2", ";", ";x=y", "#", "#frag", "?", "?q=/..", "\\", " ", "\t", "\u{0}",
            "é", "~", "-", "_", "*", "http:", "@", ":",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{0,6}",
        1 => any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
}

fn target() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(path_piece(), 0..12)).prop_map(|(slash, pieces)| {
        let mut t = if slash { "/".to_owned() } else { String::new() };
        for p in pieces {
            t.push_str(&p);
        }
        t
    })
}

/// Bytes a canonical path may hold and still be sent raw.
fn raw_ok(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'#' | b';' | b'\\' | b'?')
}

/// A canonical path written back as a request target: what cannot be sent raw is escaped.
fn encode_path(canonical: &str) -> String {
    canonical
        .bytes()
        .map(|b| {
            if raw_ok(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn canonicalization_is_idempotent(t in target()) {
        if let Ok(path) = canonicalize(&t) {
            let written = encode_path(&path);
            match canonicalize(&written) {
                Ok(again) => prop_assert_eq!(&*again, &*path, "{:?} -> {:?} -> {:?}", t, path, written),
                Err(PathError::TooLong) => {}
                Err(e) => prop_assert!(false, "{:?} -> {:?} -> {:?} refused: {}", t, path, written, e),
            }
            // A canonical path with nothing to escape is its own canonical form, as is.
            if path.bytes().all(raw_ok) {
                let again = canonicalize(&path);
                prop_assert_eq!(again.as_deref(), Ok(&*path));
            }
        }
    }

    #[test]
    fn the_query_never_changes_the_path(t in target(), q in "[ -~]{0,12}") {
        let path_part = t.split('?').next().unwrap_or("").to_owned();
        let with_query = format!("{path_part}?{q}");
        if path_part.is_empty() {
            prop_assert!(canonicalize(&with_query).is_err());
        } else {
            prop_assert_eq!(canonicalize(&with_query), canonicalize(&path_part));
        }
    }

    #[test]
    fn an_accepted_path_never_contains_a_refused_construct(t in target()) {
        if let Ok(path) = canonicalize(&t) {
            prop_assert!(path.starts_with('/'), "{:?} -> {:?}", t, path);
            for refused in ['#', ';', '\\', '?', '%'] {
                prop_assert!(!path.contains(refused), "{:?} -> {:?} has {:?}", t, path, refused);
            }
            // No control character: C0 and DEL, and C1 (`%C2%85`) once decoded.
            prop_assert!(!path.chars().any(char::is_control), "{:?} -> {:?}", t, path);
            let segments: Vec<&str> = path[1..].split('/').collect();
            for (i, s) in segments.iter().enumerate() {
                prop_assert!(*s != "." && *s != "..", "{:?} -> {:?}: dot segment", t, path);
                prop_assert!(!s.is_empty() || i + 1 == segments.len(), "{:?} -> {:?}: //", t, path);
            }
            // Nor did the raw target hold one before its query.
            let raw = t.split('?').next().unwrap_or("");
            for refused in ["#", ";", "\\", "//", "/./", "/../", "%2f", "%2F", "%5c", "%5C", "%25", "%00"] {
                prop_assert!(!raw.contains(refused), "{:?} accepted with {:?}", t, refused);
            }
            prop_assert!(!raw.ends_with("/.") && !raw.ends_with("/.."), "{:?}", t);
        }
    }

    #[test]
    fn host_normalization_only_lowercases_and_shortens(h in "[ -~]{0,24}") {
        let n = normalize_host(&h);
        prop_assert!(n.len() <= h.len());
        prop_assert!(!n.bytes().any(|b| b.is_ascii_uppercase()));
        prop_assert!(h.to_ascii_lowercase().starts_with(&*n), "{:?} -> {:?}", h, n);
    }
}

// ---------------------------------------------------------------------------------------------
// check() on any request
// ---------------------------------------------------------------------------------------------

fn keys() -> KeySet {
    let verify = VerifyingKey::hmac("k", Algorithm::HS256, SECRET).unwrap();
    let sign = SigningKey::hmac("k", Algorithm::HS256, SECRET).unwrap();
    KeySet::new([verify], Some(sign)).unwrap()
}

fn settings() -> JwtSettings {
    JwtSettings {
        rules: ClaimRules {
            issuer: Some(ISSUER.to_owned()),
            audience: vec!["portcullis".to_owned()],
            leeway: Duration::from_secs(30),
        },
        cookie_name: "jwt-token".to_owned(),
        cache_ttl: Duration::from_secs(60),
        cache_capacity: 1000,
    }
}

fn service(doc: &PolicyDocument) -> CheckService {
    let snapshot = PolicySnapshot::compile(doc, 1).unwrap();
    let handle = Arc::new(ArcSwapOption::from(Some(Arc::new(snapshot))));
    let identifier = Identifier::new(keys(), settings());
    CheckService::new(Arc::new(Authorizer::new(handle, Arc::new(identifier))))
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    example: CheckService,
    empty: CheckService,
    signer: KeySet,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap(),
        example: service(&PolicyDocument::from_yaml("examples/policy.yaml", POLICY).unwrap()),
        empty: service(&PolicyDocument::default()),
        signer: keys(),
    })
}

/// The claims of a validly signed token.
#[derive(Debug, Clone)]
struct TokenClaims {
    sub: String,
    name: Option<String>,
    roles: Vec<String>,
    permissions: Vec<String>,
    in_cookie: bool,
}

fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "admin", "viewer", "roles:read", "roles:write", "public", "authenticated", "root",
            "viewer,admin", "ad min", "x;y", "", "é",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>().prop_map(|s| s.chars().take(10).collect()),
    ]
}

fn token_claims() -> impl Strategy<Value = TokenClaims> {
    (
        prop_oneof![
            "[a-z0-9]{1,8}",
            any::<String>().prop_map(|s| s.chars().take(12).collect())
        ],
        prop::option::of(any::<String>().prop_map(|s| s.chars().take(12).collect::<String>())),
        prop::collection::vec(name_like(), 0..4),
        prop::collection::vec(name_like(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(sub, name, roles, permissions, in_cookie)| TokenClaims {
            sub,
            name,
            roles,
            permissions,
            in_cookie,
        })
}

#[derive(Debug, Clone)]
struct AnyRequest {
    no_http: bool,
    method: String,
    host: String,
    path: String,
    raw_headers: bool,
    headers: Vec<(String, Vec<u8>)>,
    token: Option<TokenClaims>,
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "authorization",
            "Authorization",
            "cookie",
            "x-api-token",
            "x-auth-roles",
            "X-Auth-User-Id",
            "x-auth-",
            "x-auth-é",
            "é",
            "",
            " authorization",
        ])
        .prop_map(str::to_owned),
        "x-auth-[a-z-]{0,8}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            "Bearer a.b.c",
            "bearer",
            "Bearer ",
            "Basic x",
            "jwt-token=a.b.c; jwt-token=d",
            "jwt-token=",
            "pcs_",
            "pcs_0000000000000000000000000000000000000000000000000",
            "Bearer x,Bearer y",
            "admin",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn any_request() -> impl Strategy<Value = AnyRequest> {
    (
        any::<bool>(),
        prop::sample::select(vec![
            "GET", "POST", "PUT", "HEAD", "CONNECT", "get", "", "BREW",
        ]),
        prop::sample::select(vec![
            "app.example.com",
            "allocations.example.com",
            "ALLOCATIONS.example.com:443",
            "allocations.example.com.",
            "[::1]:1",
            "",
            ":",
            "[",
        ]),
        prop_oneof![
            target(),
            prop::sample::select(vec![
                "/healthz",
                "/api/v1/roles",
                "/api/v1/roles/7",
                "/api/v1/me"
            ])
            .prop_map(str::to_owned),
        ],
        any::<bool>(),
        prop::collection::vec((header_name(), header_value()), 0..5),
        prop::option::of(token_claims()),
    )
        .prop_map(
            |(no_http, method, host, path, raw_headers, headers, token)| AnyRequest {
                no_http: no_http && path.len() % 7 == 0,
                method: method.to_owned(),
                host: host.to_owned(),
                path,
                raw_headers,
                headers,
                token,
            },
        )
}

fn build(req: &AnyRequest, signer: &KeySet) -> CheckRequest {
    if req.no_http {
        return CheckRequest {
            attributes: Some(AttributeContext::default()),
        };
    }
    let mut headers = req.headers.clone();
    if let Some(c) = &req.token {
        let now = support::unix_now() as i64;
        let claims = serde_json::json!({
            "sub": c.sub, "name": c.name, "roles": c.roles, "permissions": c.permissions,
            "iss": ISSUER, "aud": "portcullis", "iat": now, "exp": now + 300,
        });
        let token = signer.mint(&claims).unwrap();
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
    let mut http = attribute_context::HttpRequest {
        method: req.method.clone(),
        host: req.host.clone(),
        path: req.path.clone(),
        ..Default::default()
    };
    if req.raw_headers {
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

fn check(service: &CheckService, request: CheckRequest) -> CheckResponse {
    fixture()
        .runtime
        .block_on(portcullis::grpc::decide(service, &request))
}

/// Header values Envoy accepts: visible ASCII, space and tab.
fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn check_always_answers_with_a_well_formed_response(req in any_request()) {
        let f = fixture();
        let response = check(&f.example, build(&req, &f.signer));
        let status = response.status.as_ref().expect("a status").code;
        match response.http_response.as_ref().expect("an http response") {
            HttpResponse::OkResponse(ok) => {
                prop_assert_eq!(status, 0);
                prop_assert!(!req.no_http);
                prop_assert!(canonicalize(&req.path).is_ok(), "allowed {:?}", req.path);
                let mut seen = BTreeSet::new();
                for h in &ok.headers {
                    let hv = h.header.as_ref().unwrap();
                    prop_assert!(hv.key.starts_with("x-auth-"), "sets {:?}", hv.key);
                    prop_assert!(valid_header_value(&hv.value), "{}: {:?}", hv.key, hv.value);
                    prop_assert_eq!(h.append_action, 2, "{} is appended", &hv.key);
                    prop_assert!(seen.insert(hv.key.clone()), "{} set twice", &hv.key);
                }
                // Every client-sent x-auth-* is overwritten or removed.
                for (name, _) in &req.headers {
                    let lower = name.to_ascii_lowercase();
                    if lower.starts_with("x-auth-") {
                        prop_assert!(
                            seen.contains(&lower) || ok.headers_to_remove.contains(&lower),
                            "client {:?} survives", name
                        );
                    }
                }
            }
            HttpResponse::DeniedResponse(d) => {
                prop_assert_ne!(status, 0);
                let code = d.status.as_ref().unwrap().code;
                prop_assert!([400, 401, 403, 503].contains(&code), "status {}", code);
                let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
                prop_assert!(body["reason"].is_string());
            }
            HttpResponse::ErrorResponse(_) => prop_assert!(false, "an error response"),
        }
    }

    #[test]
    fn an_empty_policy_denies_everything(req in any_request()) {
        let f = fixture();
        let response = check(&f.empty, build(&req, &f.signer));
        prop_assert!(
            matches!(response.http_response, Some(HttpResponse::DeniedResponse(_))),
            "allowed by an empty policy: {:?}", req
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Policies: monotonicity and the bucketed index against a plain scan
// ---------------------------------------------------------------------------------------------

const PATTERNS: &[&str] = &[
    "/api/v1/roles",
    "/api/v1/roles/[^/]+",
    "/api/v1/roles/[^/]+/users",
    "/a/.*",
    "/a/b",
    "/a|/b",
    "(?i)/admin",
    "/files/\\d+",
    "/x+",
    "/caf\u{e9}/menu",
    "/a/b?c",
    "/",
    "/.*",
    "[/]admin",
    "/api/v1.0/x",
    "/p/[a-z]{2,3}/q",
    "/a/b/",
    "/api/v1/*",
];
const HOSTS: &[Option<&str>] = &[None, None, Some("a.example.com"), Some("b.example.com")];
const METHODS: &[&str] = &["GET", "POST", "PUT", "*"];
const SEGMENTS: &[&str] = &[
    "api",
    "v1",
    "roles",
    "7",
    "users",
    "a",
    "b",
    "ac",
    "abc",
    "admin",
    "ADMIN",
    "x",
    "xx",
    "files",
    "12",
    "caf\u{e9}",
    "menu",
    "p",
    "ab",
    "q",
    "v1.0",
    "v1x0",
    "",
    "bb",
];

fn activity() -> impl Strategy<Value = Activity> {
    (
        prop::sample::select(METHODS),
        prop::sample::select(PATTERNS),
        prop::sample::select(HOSTS),
    )
        .prop_map(|(m, p, h)| Activity {
            method: Method::parse(m).unwrap(),
            path: p.to_owned(),
            host: h.map(str::to_owned),
        })
}

/// A policy of up to five permissions (`p0`..`p4`, plus the reserved ones) and two roles.
fn policy() -> impl Strategy<Value = PolicyDocument> {
    (
        prop::collection::vec(prop::collection::vec(activity(), 0..4), 7),
        prop::collection::vec(prop::collection::btree_set(0usize..5, 0..4), 2),
    )
        .prop_map(|(activities, roles)| {
            let mut doc = PolicyDocument::default();
            let names = ["p0", "p1", "p2", "p3", "p4", "public", "authenticated"];
            for (name, acts) in names.iter().zip(activities) {
                doc.permissions.insert(
                    (*name).to_owned(),
                    PermissionSpec {
                        description: None,
                        activities: acts,
                    },
                );
            }
            let roles: BTreeMap<String, Vec<String>> = roles
                .into_iter()
                .enumerate()
                .map(|(i, perms)| {
                    (
                        format!("r{i}"),
                        perms.into_iter().map(|p| format!("p{p}")).collect(),
                    )
                })
                .collect();
            doc.roles = roles;
            doc
        })
}

fn policy_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SEGMENTS), 0..5)
        .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn request_host() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a.example.com",
        "A.EXAMPLE.COM:443",
        "b.example.com",
        "c.example.com",
        "",
    ])
}

fn request_method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "BREW"])
}

fn allowed(
    snapshot: &PolicySnapshot,
    method: &str,
    host: &str,
    path: &str,
    permissions: &BTreeSet<String>,
) -> bool {
    let principal = Arc::new(Principal::Assumed {
        permissions: permissions.iter().cloned().collect(),
    });
    matches!(
        decide_with(
            snapshot,
            method,
            host,
            path,
            Some(principal),
            PermissionSource::Token
        ),
        Decision::Allow(_)
    )
}

/// The decision without any index: every activity of every permission the caller holds.
fn scan(
    doc: &PolicyDocument,
    method: &str,
    host: &str,
    path: &str,
    held: &BTreeSet<String>,
) -> bool {
    let host = normalize_host(host);
    doc.permissions.iter().any(|(name, spec)| {
        let holds = held.contains(name) || name == "public" || name == "authenticated";
        holds
            && spec.activities.iter().any(|a| {
                (a.method == Method::Any || a.method.as_str() == method)
                    && a.host.as_deref().is_none_or(|h| h == host)
                    && regex::Regex::new(&format!(r"\A(?:{})\z", a.path))
                        .unwrap()
                        .is_match(path)
            })
    })
}

fn permission_set() -> impl Strategy<Value = BTreeSet<String>> {
    prop::collection::btree_set((0usize..5).prop_map(|p| format!("p{p}")), 0..4)
}

proptest! {
    #![proptest_config(cases(96))]

    #[test]
    fn adding_a_permission_never_turns_an_allow_into_a_deny(
        doc in policy(),
        held in permission_set(),
        extra in 0usize..5,
        requests in prop::collection::vec((request_method(), request_host(), policy_path()), 1..12),
    ) {
        let snapshot = PolicySnapshot::compile(&doc, 1).unwrap();
        let mut more = held.clone();
        more.insert(format!("p{extra}"));
        for (method, host, path) in requests {
            if allowed(&snapshot, method, host, &path, &held) {
                prop_assert!(
                    allowed(&snapshot, method, host, &path, &more),
                    "{} {} {}: allowed with {:?}, denied with {:?}", method, host, path, held, more
                );
            }
        }
    }

    #[test]
    fn adding_a_role_never_turns_an_allow_into_a_deny(
        doc in policy(),
        role in 0usize..2,
        requests in prop::collection::vec((request_method(), request_host(), policy_path()), 1..12),
    ) {
        use portcullis::identity::{JwtCaller, UnixTime};
        let snapshot = PolicySnapshot::compile(&doc, 1).unwrap();
        let caller = |roles: Vec<String>| {
            Arc::new(Principal::Jwt(JwtCaller {
                subject: "s".to_owned(),
                email: None,
                email_verified: false,
                name: None,
                roles,
                permissions: vec![],
                expires_at: UnixTime::from_secs(i64::MAX / 2),
                issued_at: None,
                jti: None,
                sid: None,
            }))
        };
        for (method, host, path) in requests {
            let before = decide_with(&snapshot, method, host, &path, Some(caller(vec![])), PermissionSource::Token);
            let after = decide_with(&snapshot, method, host, &path, Some(caller(vec![format!("r{role}")])), PermissionSource::Token);
            if matches!(before, Decision::Allow(_)) {
                prop_assert!(matches!(after, Decision::Allow(_)), "{} {} {}", method, host, path);
            }
        }
    }

    #[test]
    fn evaluation_agrees_with_a_plain_scan(
        doc in policy(),
        held in permission_set(),
        requests in prop::collection::vec((request_method(), request_host(), policy_path()), 1..12),
    ) {
        let snapshot = PolicySnapshot::compile(&doc, 1).unwrap();
        for (method, host, path) in requests {
            prop_assert_eq!(
                allowed(&snapshot, method, host, &path, &held),
                scan(&doc, method, host, &path, &held),
                "{} {} {} with {:?}", method, host, path, held
            );
        }
    }
}
