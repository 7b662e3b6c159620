//! The request path, measured: canonicalization, snapshot evaluation (example policy and a
//! 1,000-activity policy), and a whole Check (CheckRequest in, CheckResponse out) with a
//! cached JWT. `make bench`; figures go to BENCHMARKS.md.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest,
};
use portcullis::authz::Authorizer;
use portcullis::config::{JwtAlgorithm, JwtConfig, KeyConfig};
use portcullis::grpc::CheckService;
use portcullis::identity::Identifier;
use portcullis::keyring;
use portcullis::policy::{path, PolicyDocument, PolicySnapshot};

const SECRET: &str = "benchmark-secret-0123456789abcdef0123456789";

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

fn check_request(path: &str, token: &str) -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert("authorization".to_owned(), format!("Bearer {token}"));
    headers.insert("x-auth-user-id".to_owned(), "spoofed".to_owned());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".to_owned(),
                    path: path.to_owned(),
                    host: "app.example.com".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "1", "email": "ada@example.com", "name": "Ada Lovelace", "roles": ["admin"],
        "permissions": ["roles:read", "roles:write"], "exp": now + 3600, "jti": "bench",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("bench".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("token")
}

fn benches(c: &mut Criterion) {
    c.bench_function("canonicalize/plain", |b| {
        b.iter(|| path::canonicalize(black_box("/api/v1/roles/42/users?page=2")))
    });
    c.bench_function("canonicalize/escaped", |b| {
        b.iter(|| path::canonicalize(black_box("/files/caf%C3%A9%20menu.txt")))
    });

    let example = PolicySnapshot::compile(&example_policy(), 1).expect("compiles");
    let grants = example.grants(true, ["roles:read"], []);
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
    let large = PolicySnapshot::compile(&large_policy(1000), 1).expect("compiles");
    let grants = large.grants(true, ["svc99:read"], []);
    c.bench_function("evaluate/1000-activities", |b| {
        b.iter(|| {
            large.evaluate(
                "GET",
                "app.example.com",
                black_box("/api/v1/svc99/res9/x"),
                &grants,
            )
        })
    });

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
    let snapshot = Arc::new(ArcSwapOption::from_pointee(
        PolicySnapshot::compile(&example_policy(), 1).expect("compiles"),
    ));
    let service = CheckService::new(Arc::new(Authorizer::new(
        snapshot,
        Arc::new(Identifier::new(keys, &jwt)),
    )));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let request = check_request("/api/v1/roles/42/users?page=2", &token());
    c.bench_function("check/allow-cached-jwt", |b| {
        b.iter(|| runtime.block_on(service.decide(black_box(&request))))
    });
    let anonymous = CheckRequest {
        ..check_request("/api/v1/roles", "")
    };
    c.bench_function("check/deny-invalid-token", |b| {
        b.iter(|| runtime.block_on(service.decide(black_box(&anonymous))))
    });
}

criterion_group!(decide, benches);
criterion_main!(decide);
