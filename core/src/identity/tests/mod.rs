//! Identity tests, by job: `claims` (the claim matrix, header attacks, the verified-token
//! cache), `keys` (PEM and JWKS keys, the strength rules), `wycheproof` (the JWK and JWS
//! vectors). This file holds the shared keys and helpers. Key files and vectors are compiled
//! in: identity reads nothing at run time, and neither do its tests.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;

mod api_tokens;
mod claims;
mod keys;
mod wycheproof;

const RS256_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/rs256.pub.pem");
const RS256_PKCS1_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/rs256.pkcs1.pub.pem");
const RS256_KEY: &[u8] = include_bytes!("../../../../tests/data/keys/rs256.key.pem");
const ES256_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/es256.pub.pem");
const ES256_KEY: &[u8] = include_bytes!("../../../../tests/data/keys/es256.key.pem");
const ED25519_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/ed25519.pub.pem");
const ED25519_KEY: &[u8] = include_bytes!("../../../../tests/data/keys/ed25519.key.pem");
const P384_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/p384.pub.pem");
const RSA1024_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/rsa1024.pub.pem");
const RSA1024_KEY: &[u8] = include_bytes!("../../../../tests/data/keys/rsa1024.key.pem");
const ROCA_PUB: &[u8] = include_bytes!("../../../../tests/data/keys/roca.pub.pem");
const JWK_VECTORS: &str = include_str!("../../../../tests/data/wycheproof/json_web_key_test.json");
const JWS_VECTORS: &str =
    include_str!("../../../../tests/data/wycheproof/json_web_signature_test.json");

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn settings() -> JwtSettings {
    JwtSettings {
        rules: ClaimRules {
            issuer: Some("https://issuer.test".to_owned()),
            audience: vec!["portcullis".to_owned()],
            leeway: Duration::from_secs(30),
        },
        cookie_name: "jwt-token".to_owned(),
        cache_ttl: Duration::from_secs(300),
        cache_capacity: 1000,
    }
}

fn hmac_key(kid: &str) -> VerifyingKey {
    VerifyingKey::hmac(kid, Algorithm::HS256, SECRET.as_bytes()).expect("hmac key")
}

/// HS256 `hs`, RS256 `rs`, ES256 `es`, EdDSA `ed`.
fn identifier() -> Identifier {
    let pem = |kid, alg, pem| VerifyingKey::from_pem(kid, alg, pem).expect(kid);
    let keys = KeySet::new(
        [
            hmac_key("hs"),
            pem("rs", Algorithm::RS256, RS256_PUB),
            pem("es", Algorithm::ES256, ES256_PUB),
            pem("ed", Algorithm::EdDSA, ED25519_PUB),
        ],
        None,
    )
    .expect("distinct kids");
    Identifier::new(keys, settings())
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key"),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RS256_KEY).expect("rsa key"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(ES256_KEY).expect("ec key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519_KEY).expect("ed key"),
        other => panic!("no test key for {other:?}"),
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Signs `header.payload` with `alg`'s test key, whatever the header says.
fn sign(header: Value, claims: Value, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &encoding_key(alg), alg).expect("signs");
    format!("{message}.{sig}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn good_claims() -> Value {
    json!({
        "sub": "42", "email": "ada@example.com", "name": "Ada", "roles": ["admin"],
        "permissions": ["roles:read"], "iss": "https://issuer.test", "aud": "portcullis",
        "exp": now() + 600, "iat": now(), "jti": "t1"
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().expect("object").remove(key);
    } else {
        claims[key] = value;
    }
    claims
}
