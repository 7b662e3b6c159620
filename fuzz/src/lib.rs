//! What the fuzz targets share: the invariants each parser must keep, written once, and a
//! `CheckService` over the example policy with an HS256 test key. Every invariant is an
//! `assert!`, so a violation is a crash libFuzzer keeps.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use portcullis::authz::Authorizer;
use portcullis::check::CheckService;
use portcullis::identity::{ClaimRules, Identifier, JwtSettings, KeySet, SigningKey, VerifyingKey};
use portcullis::policy::path::{canonicalize, PathError};
use portcullis::policy::{PolicyDocument, PolicySnapshot};

pub const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123456789abcdef";
pub const KID: &str = "k";
pub const ISSUER: &str = "fuzz";
pub const AUDIENCE: &str = "portcullis";
pub const POLICY: &str = include_str!("../../examples/policy.yaml");

/// Bytes a canonical path may hold and still be sent raw: visible ASCII but the characters
/// the canonicalizer gives meaning to.
fn raw_ok(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'#' | b';' | b'\\' | b'?')
}

/// A canonical path written back as a request target: what cannot be sent raw is escaped.
pub fn encode_path(canonical: &str) -> String {
    let mut out = String::with_capacity(canonical.len());
    for &b in canonical.as_bytes() {
        if raw_ok(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The invariants of path canonicalization for one input.
pub fn check_path(target: &str) {
    let result = canonicalize(target);
    let Ok(path) = result else {
        // The query never changes whether the path is accepted.
        if let Some(i) = target.find('?') {
            if i > 0 {
                let alone = canonicalize(&target[..i]);
                assert!(alone.is_err(), "{target:?}: query changed the outcome");
            }
        }
        return;
    };
    let path: &str = &path;
    // An accepted path never holds a construct that is refused.
    assert!(path.starts_with('/'), "{target:?} -> {path:?}");
    for forbidden in ['#', ';', '\\', '?', '%'] {
        assert!(
            !path.contains(forbidden),
            "{target:?} -> {path:?} holds {forbidden:?}"
        );
    }
    // No control character, one byte (C0, DEL) or two (C1, such as an encoded U+0085).
    assert!(
        !path.chars().any(char::is_control),
        "{target:?} -> {path:?} holds a control byte"
    );
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        assert!(
            *s != "." && *s != "..",
            "{target:?} -> {path:?}: dot segment"
        );
        assert!(
            !s.is_empty() || i + 1 == segments.len(),
            "{target:?} -> {path:?}: empty segment"
        );
    }
    // Idempotent: the canonical path, written back as a target, canonicalizes to itself.
    let again = encode_path(path);
    match canonicalize(&again) {
        Ok(p) => assert_eq!(&*p, path, "{target:?} -> {path:?} -> {again:?} -> {p:?}"),
        // Writing back can only lengthen it.
        Err(PathError::TooLong) => {}
        Err(e) => panic!("{target:?} -> {path:?} -> {again:?} refused: {e}"),
    }
    // The query is split off at the first '?' and ignored.
    let with_query = format!("{}?a=/../%2F#x", target.split('?').next().unwrap_or(""));
    assert_eq!(
        canonicalize(&with_query).as_deref(),
        Ok(path),
        "{target:?}: a query changed the path"
    );
}

/// The claim rules the fuzz service uses.
pub fn rules() -> ClaimRules {
    ClaimRules {
        issuer: Some(ISSUER.to_owned()),
        audience: vec![AUDIENCE.to_owned()],
        leeway: Duration::from_secs(30),
    }
}

/// The HS256 key set, with the same key to sign with.
pub fn keys() -> KeySet {
    let verify = VerifyingKey::hmac(KID, Algorithm::HS256, SECRET).expect("hmac key");
    let sign = SigningKey::hmac(KID, Algorithm::HS256, SECRET).expect("hmac key");
    KeySet::new([verify], Some(sign)).expect("key set")
}

/// The example policy, compiled.
pub fn snapshot() -> PolicySnapshot {
    let doc = PolicyDocument::from_yaml("examples/policy.yaml", POLICY).expect("policy");
    PolicySnapshot::compile(&doc, 1).expect("compiles")
}

/// A `CheckService` over the example policy, and a runtime to drive it, built once.
pub fn service() -> &'static (tokio::runtime::Runtime, CheckService, KeySet) {
    static SERVICE: OnceLock<(tokio::runtime::Runtime, CheckService, KeySet)> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let settings = JwtSettings {
            rules: rules(),
            cookie_name: "jwt-token".to_owned(),
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 1000,
        };
        let identifier = Identifier::new(keys(), settings);
        let handle = Arc::new(ArcSwapOption::from(Some(Arc::new(snapshot()))));
        let service = CheckService::new(Arc::new(Authorizer::new(handle, Arc::new(identifier))));
        (runtime, service, keys())
    })
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
