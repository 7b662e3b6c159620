//! The request path, measured: canonicalization, snapshot evaluation (example policy and a
//! 1,000-activity policy), signature + claims verification per algorithm without a cache, and
//! whole Checks (CheckRequest in, CheckResponse out, shaped as Envoy sends them with
//! `encode_raw_headers`): a cached JWT, a caller holding 1,000 permissions, a cached API token
//! and a refusal; and a Check with a candidate policy evaluated beside the live one. `make bench`; figures go to BENCHMARKS.md. Under `cargo test` each runs once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest, CheckResponse,
};
use jsonwebtoken::Algorithm;
use portcullis::authz::{Authorizer, Decision};
use portcullis::check::{CheckService, DecisionObserver, Observed};
use portcullis::config::{JwtAlgorithm, JwtConfig, KeyConfig};
use portcullis::grpc;
use portcullis::identity::{
    ApiTokenSettings, ClaimRules, Identifier, KeySet, Principal, SigningKey, UnixTime, VerifyingKey,
};
use portcullis::keyring;
use portcullis::manage;
use portcullis::policy::{path, PolicyDocument, PolicySnapshot};
use portcullis::store::{MemoryStore, OwnerRef};
use prost::Message as _;

const SECRET: &str = "benchmark-secret-0123456789abcdef0123456789";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keys/");

/// `cargo bench` passes `--bench`. Under `cargo test` each benchmark runs once, as a smoke
/// test, and the large fixtures shrink a hundredfold: a debug build compiles a policy's
/// regexes slowly (about 20 s for 1,000 permissions).
fn fixture_size(full: usize) -> usize {
    if std::env::args().any(|a| a == "--bench") {
        full
    } else {
        (full / 100).max(10)
    }
}

fn example_policy() -> PolicyDocument {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.yaml"))
            .expect("policy");
    PolicyDocument::from_yaml("examples/policy.yaml", &text).expect("valid")
}

fn large_policy(activities: usize) -> PolicyDocument {
    let mut yaml = String::from("permissions:\n");
    for p in 0..activities / 10 {
        yaml.push_str(&format!("  svc{p}:read:\n    activities:\n"));
        for a in 0..10 {
            yaml.push_str(&format!("      - GET /api/v1/svc{p}/res{a}/[^/]+\n"));
        }
    }
    PolicyDocument::from_yaml("large", &yaml).expect("valid")
}

/// `count` permissions `p0000`.. of one activity each (`GET /api/v1/p0000/[^/]+`), and a role
/// `everything` holding all of them.
fn many_permissions_policy(count: usize) -> PolicyDocument {
    let mut yaml = String::from("permissions:\n");
    for p in 0..count {
        yaml.push_str(&format!(
            "  p{p:04}:\n    activities: [\"GET /api/v1/p{p:04}/[^/]+\"]\n"
        ));
    }
    yaml.push_str("roles:\n  everything:\n");
    for p in 0..count {
        yaml.push_str(&format!("    - p{p:04}\n"));
    }
    PolicyDocument::from_yaml("many-permissions", &yaml).expect("valid")
}

/// A CheckRequest as Envoy sends it with `encode_raw_headers: true`: only the allowed headers,
/// as raw bytes in `header_map`.
fn check_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: "app.example.com".to_owned(),
                    header_map: Some(HeaderMap {
                        headers: headers
                            .iter()
                            .map(|(k, v)| HeaderValue {
                                key: (*k).to_owned(),
                                raw_value: v.as_bytes().to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn bearer(path: &str, token: &str) -> CheckRequest {
    let auth = format!("Bearer {token}");
    check_request(
        "GET",
        path,
        &[("authorization", &auth), ("x-auth-user-id", "spoofed")],
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(roles: &[&str], permissions: &[&str]) -> serde_json::Value {
    let now = now();
    serde_json::json!({
        "sub": "1", "email": "ada@example.com", "name": "Ada Lovelace", "roles": roles,
        "permissions": permissions, "iat": now, "exp": now + 3600, "jti": "bench",
    })
}

fn hs256_token(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("bench".to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("token")
}

fn hs256_keys() -> (KeySet, JwtConfig) {
    let jwt = JwtConfig {
        keys: vec![KeyConfig {
            kid: "bench".to_owned(),
            algorithm: JwtAlgorithm::Hs256,
            secret_env: Some("BENCH_SECRET".to_owned()),
            secret_file: None,
            public_key_file: None,
            private_key_file: None,
        }],
        ..JwtConfig::default()
    };
    let keys = keyring::load(&jwt, |_| Some(SECRET.to_owned())).expect("keys");
    (keys, jwt)
}

fn service(snapshot: PolicySnapshot, identifier: Identifier) -> CheckService {
    let snapshot = Arc::new(ArcSwapOption::from_pointee(snapshot));
    CheckService::new(Arc::new(Authorizer::new(snapshot, Arc::new(identifier))))
}

/// Counts the Checks the candidate policy decides otherwise (what the metrics observer does).
#[derive(Default)]
struct Disagreements(AtomicU64);

impl DecisionObserver for Disagreements {
    fn observe(&self, o: &Observed<'_>) {
        let allowed = |d: &Decision| matches!(d, Decision::Allow(_));
        if o.shadow.is_some_and(|s| allowed(s) != allowed(o.decision)) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn allowed(response: &CheckResponse) -> bool {
    response.status.as_ref().is_some_and(|s| s.code == 0)
}

fn path_and_policy(c: &mut Criterion) {
    c.bench_function("canonicalize/plain", |b| {
        b.iter(|| path::canonicalize(black_box("/api/v1/roles/42/users?page=2")))
    });
    c.bench_function("canonicalize/escaped", |b| {
        b.iter(|| path::canonicalize(black_box("/files/caf%C3%A9%20menu.txt")))
    });

    let example = PolicySnapshot::compile(&example_policy(), 1).expect("compiles");
    let grants = example.grants(true, ["roles:read"], []);
    assert!(example
        .evaluate("GET", "app.example.com", "/api/v1/roles/42/users", &grants)
        .is_some());
    c.bench_function("evaluate/example-policy", |b| {
        b.iter(|| {
            example.evaluate(
                "GET",
                "app.example.com",
                black_box("/api/v1/roles/42/users"),
                &grants,
            )
        })
    });
    let large = PolicySnapshot::compile(&large_policy(fixture_size(1000)), 1).expect("compiles");
    let last = fixture_size(1000) / 10 - 1;
    let (permission, path) = (
        format!("svc{last}:read"),
        format!("/api/v1/svc{last}/res9/x"),
    );
    let grants = large.grants(true, [permission.as_str()], []);
    assert!(large
        .evaluate("GET", "app.example.com", &path, &grants)
        .is_some());
    c.bench_function("evaluate/1000-activities", |b| {
        b.iter(|| large.evaluate("GET", "app.example.com", black_box(path.as_str()), &grants))
    });
}

/// The test key pair `tests/data/keys/NAME.{pub,key}.pem` for `alg`, signing included.
fn pem_keys(alg: Algorithm, name: &str) -> KeySet {
    let pem = |suffix: &str| std::fs::read(format!("{KEYS}{name}.{suffix}.pem")).expect("key");
    KeySet::new(
        [VerifyingKey::from_pem("k", alg, &pem("pub")).expect("public key")],
        Some(SigningKey::from_pem("k", alg, &pem("key")).expect("private key")),
    )
    .expect("key set")
}

/// Signature and claims of one token, every time: what a cache miss costs per algorithm.
fn uncached_verify(c: &mut Criterion) {
    let secret = std::fs::read_to_string(format!("{KEYS}hs256.secret")).expect("secret");
    let secret = secret.trim().as_bytes();
    let hs256 = KeySet::new(
        [VerifyingKey::hmac("k", Algorithm::HS256, secret).expect("hs256")],
        Some(SigningKey::hmac("k", Algorithm::HS256, secret).expect("hs256")),
    )
    .expect("key set");
    let cases = [
        ("HS256", hs256),
        ("RS256", pem_keys(Algorithm::RS256, "rs256")),
        ("ES256", pem_keys(Algorithm::ES256, "es256")),
        ("EdDSA", pem_keys(Algorithm::EdDSA, "ed25519")),
    ];
    let rules = ClaimRules {
        issuer: None,
        audience: Vec::new(),
        leeway: std::time::Duration::from_secs(30),
    };
    let now = UnixTime::now().expect("clock");
    for (alg, keys) in cases {
        let token = keys.mint(&claims(&["admin"], &[])).expect("mint");
        c.bench_function(&format!("verify/uncached/{alg}"), |b| {
            b.iter(|| {
                let (payload, _) = keys.verify_signature(black_box(&token)).expect("valid");
                let claims = rules.check(&payload, now).expect("claims");
                Principal::from_claims(claims).expect("principal")
            })
        });
    }
}

/// What the server does for one Check: decide, then encode the answer for the wire.
fn served(
    runtime: &tokio::runtime::Runtime,
    service: &CheckService,
    request: &CheckRequest,
) -> Vec<u8> {
    runtime
        .block_on(grpc::answer(service, request))
        .encode_to_vec()
}

fn whole_check(c: &mut Criterion) {
    // Timers for the store lookup's timeout (taken only on a cache miss).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    let (keys, jwt) = hs256_keys();
    let example = PolicySnapshot::compile(&example_policy(), 1).expect("compiles");
    let service_example = service(example, Identifier::new(keys, &jwt));
    let token = hs256_token(&claims(&["admin"], &["roles:read", "roles:write"]));
    let request = bearer("/api/v1/roles/42/users?page=2", &token);
    assert!(allowed(
        &runtime.block_on(grpc::decide(&service_example, &request))
    ));
    c.bench_function("check/allow-cached-jwt", |b| {
        b.iter(|| served(&runtime, &service_example, black_box(&request)))
    });

    // The same Check seen by an observer, then with a candidate policy loaded: the difference
    // is what shadow evaluation costs a sidecar while a candidate is stored.
    let (keys, jwt) = hs256_keys();
    let live = Arc::new(ArcSwapOption::from_pointee(
        PolicySnapshot::compile(&example_policy(), 1).expect("compiles"),
    ));
    let candidate_doc = example_policy().merged_with(
        &PolicyDocument::from_yaml("c", "roles:\n  admin: [roles:read]\n").expect("valid"),
        false,
    );
    let candidate = Arc::new(ArcSwapOption::from_pointee(
        PolicySnapshot::compile(&candidate_doc, 1).expect("compiles"),
    ));
    let seen = Arc::new(Disagreements::default());
    let identifier = Arc::new(Identifier::new(keys, &jwt));
    let observed = CheckService::new(Arc::new(Authorizer::new(live.clone(), identifier.clone())))
        .with_observer(seen.clone());
    let shadowed = CheckService::new(Arc::new(
        Authorizer::new(live, identifier).with_shadow(candidate),
    ))
    .with_observer(seen.clone());
    let token = hs256_token(&claims(&["admin"], &[]));
    let request = bearer("/api/v1/roles", &token);
    c.bench_function("check/allow-cached-jwt-observed", |b| {
        b.iter(|| served(&runtime, &observed, black_box(&request)))
    });
    c.bench_function("check/allow-cached-jwt-with-candidate", |b| {
        b.iter(|| served(&runtime, &shadowed, black_box(&request)))
    });
    let write = bearer("/api/v1/roles", &hs256_token(&claims(&["admin"], &[])));
    let post = CheckRequest {
        attributes: write.attributes.map(|mut a| {
            if let Some(http) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
                http.method = "POST".to_owned();
            }
            a
        }),
    };
    let before = seen.0.load(Ordering::Relaxed);
    assert!(allowed(&runtime.block_on(grpc::decide(&shadowed, &post))));
    assert_eq!(
        seen.0.load(Ordering::Relaxed),
        before + 1,
        "the candidate denies it"
    );

    // A caller whose role holds 1,000 permissions: every allow lists all of them.
    let (keys, jwt) = hs256_keys();
    let count = fixture_size(1000);
    let many = PolicySnapshot::compile(&many_permissions_policy(count), 1).expect("compiles");
    let service_many = service(many, Identifier::new(keys, &jwt));
    let token = hs256_token(&claims(&["everything"], &[]));
    let request = bearer(&format!("/api/v1/p{:04}/x", count / 2), &token);
    assert!(allowed(
        &runtime.block_on(grpc::decide(&service_many, &request))
    ));
    c.bench_function("check/allow-cached-jwt-1000-permissions", |b| {
        b.iter(|| served(&runtime, &service_many, black_box(&request)))
    });

    // An API token resolved once through the store, then from the cache.
    let store = MemoryStore::new();
    let api_token = runtime.block_on(async {
        manage::apply(&store, &example_policy(), false, false)
            .await
            .expect("apply");
        let now = i64::try_from(now()).expect("now");
        manage::issue_token(
            &store,
            OwnerRef::User("ada@example.com"),
            "bench",
            now,
            None,
            None,
        )
        .await
        .expect("issue")
        .token
    });
    let snapshot = runtime
        .block_on(manage::load_snapshot(&store))
        .expect("snapshot");
    let (keys, jwt) = hs256_keys();
    let identifier = Identifier::with_api_tokens(
        keys,
        &jwt,
        ApiTokenSettings {
            // Longer than any run, so that every use after the first is a cache hit.
            cache_ttl: std::time::Duration::from_secs(3600),
            ..ApiTokenSettings::default()
        },
    );
    let service_token = service(snapshot, identifier);
    let request = check_request("GET", "/api/v1/roles", &[("x-api-token", &api_token)]);
    assert!(allowed(
        &runtime.block_on(grpc::decide(&service_token, &request))
    ));
    c.bench_function("check/allow-cached-api-token", |b| {
        b.iter(|| served(&runtime, &service_token, black_box(&request)))
    });
    assert_eq!(
        store.token_lookups(),
        0,
        "tokens are resolved from the snapshot, never the store"
    );

    let anonymous = bearer("/api/v1/roles", "");
    c.bench_function("check/deny-invalid-token", |b| {
        b.iter(|| served(&runtime, &service_example, black_box(&anonymous)))
    });
}

criterion_group!(decide, path_and_policy, uncached_verify, whole_check);
criterion_main!(decide);
