//! Identity tests: the JWT claim matrix, header attacks, key handling, the Wycheproof JWS
//! vectors and the verified-token cache.

use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;
use crate::config::{JwtConfig, KeyConfig};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn key_config(kid: &str, alg: &str, public: Option<&str>) -> KeyConfig {
    KeyConfig {
        kid: kid.to_owned(),
        algorithm: alg.to_owned(),
        secret_env: public.is_none().then(|| "TEST_SECRET".to_owned()),
        secret_file: None,
        public_key_file: public.map(data),
        private_key_file: None,
    }
}

fn config(keys: Vec<KeyConfig>) -> JwtConfig {
    JwtConfig {
        issuer: Some("https://issuer.test".to_owned()),
        audience: vec!["portcullis".to_owned()],
        keys,
        ..JwtConfig::default()
    }
}

fn test_env(name: &str) -> Option<String> {
    (name == "TEST_SECRET").then(|| SECRET.to_owned())
}

/// HS256 `hs`, RS256 `rs`, ES256 `es`, EdDSA `ed`.
fn identifier() -> Identifier {
    let cfg = config(vec![
        key_config("hs", "HS256", None),
        key_config("rs", "RS256", Some("keys/rs256.pub.pem")),
        key_config("es", "ES256", Some("keys/es256.pub.pem")),
        key_config("ed", "EdDSA", Some("keys/ed25519.pub.pem")),
    ]);
    Identifier::new(
        KeySet::from_config(&cfg, test_env).expect("keys load"),
        &cfg,
    )
}

fn encoding_key(alg: Algorithm) -> EncodingKey {
    let pem = |p: &str| std::fs::read(data(p)).expect("key file");
    match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()).expect("hmac key"),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("keys/rs256.key.pem")).expect("rsa key"),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem("keys/es256.key.pem")).expect("ec key"),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem("keys/ed25519.key.pem")).expect("ed key"),
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

#[test]
fn accepts_each_supported_algorithm() {
    let id = identifier();
    for (kid, alg) in [
        ("hs", "HS256"),
        ("rs", "RS256"),
        ("es", "ES256"),
        ("ed", "EdDSA"),
    ] {
        let algorithm = jwt::parse_algorithm(alg).expect("known");
        let token = sign(
            json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            good_claims(),
            algorithm,
        );
        let p = id
            .verify_jwt(&token)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(p.user_id, "42");
        assert_eq!(p.email.as_deref(), Some("ada@example.com"));
        assert_eq!(p.roles, vec!["admin"]);
        assert_eq!(p.permissions, vec!["roles:read"]);
        assert_eq!(p.token_id.as_deref(), Some("t1"));
    }
}

#[test]
fn claim_matrix() {
    let id = identifier();
    let t = now();
    use TokenError::*;
    let cases: Vec<(&str, Value, Result<(), TokenError>)> = vec![
        ("good", good_claims(), Ok(())),
        (
            "missing exp",
            with(good_claims(), "exp", Value::Null),
            Err(MissingExp),
        ),
        (
            "string exp",
            with(good_claims(), "exp", json!((t + 600).to_string())),
            Err(MalformedClaims),
        ),
        (
            "bool exp",
            with(good_claims(), "exp", json!(true)),
            Err(MalformedClaims),
        ),
        (
            "object exp",
            with(good_claims(), "exp", json!({"n": t + 600})),
            Err(MalformedClaims),
        ),
        (
            "fractional exp",
            with(good_claims(), "exp", json!(t as f64 + 600.5)),
            Ok(()),
        ),
        (
            "expired",
            with(good_claims(), "exp", json!(t - 3600)),
            Err(Expired),
        ),
        (
            "expired within leeway",
            with(good_claims(), "exp", json!(t - 10)),
            Ok(()),
        ),
        (
            "expired past leeway",
            with(good_claims(), "exp", json!(t - 60)),
            Err(Expired),
        ),
        (
            "future nbf",
            with(good_claims(), "nbf", json!(t + 3600)),
            Err(NotYetValid),
        ),
        (
            "nbf within leeway",
            with(good_claims(), "nbf", json!(t + 10)),
            Ok(()),
        ),
        (
            "string nbf",
            with(good_claims(), "nbf", json!("0")),
            Err(MalformedClaims),
        ),
        (
            "past nbf",
            with(good_claims(), "nbf", json!(t - 10)),
            Ok(()),
        ),
        (
            "future iat",
            with(good_claims(), "iat", json!(t + 3600)),
            Err(IssuedInFuture),
        ),
        (
            "iat within leeway",
            with(good_claims(), "iat", json!(t + 10)),
            Ok(()),
        ),
        (
            "string iat",
            with(good_claims(), "iat", json!("0")),
            Err(MalformedClaims),
        ),
        (
            "wrong iss",
            with(good_claims(), "iss", json!("https://evil.test")),
            Err(WrongIssuer),
        ),
        (
            "missing iss",
            with(good_claims(), "iss", Value::Null),
            Err(WrongIssuer),
        ),
        (
            "wrong aud",
            with(good_claims(), "aud", json!("other")),
            Err(WrongAudience),
        ),
        (
            "missing aud",
            with(good_claims(), "aud", Value::Null),
            Err(WrongAudience),
        ),
        (
            "aud list with ours",
            with(good_claims(), "aud", json!(["x", "portcullis"])),
            Ok(()),
        ),
        (
            "aud list without ours",
            with(good_claims(), "aud", json!(["x", "y"])),
            Err(WrongAudience),
        ),
        (
            "missing sub",
            with(good_claims(), "sub", Value::Null),
            Err(MissingSubject),
        ),
        (
            "empty sub",
            with(good_claims(), "sub", json!("")),
            Err(MissingSubject),
        ),
        (
            "numeric sub",
            with(good_claims(), "sub", json!(42)),
            Err(MalformedClaims),
        ),
        (
            "roles not a list",
            with(good_claims(), "roles", json!("admin")),
            Err(MalformedClaims),
        ),
        (
            "permissions not strings",
            with(good_claims(), "permissions", json!([1])),
            Err(MalformedClaims),
        ),
    ];
    for (name, claims, expected) in cases {
        let token = sign(
            json!({"alg": "HS256", "kid": "hs"}),
            claims,
            Algorithm::HS256,
        );
        assert_eq!(id.verify_jwt(&token).map(|_| ()), expected, "{name}");
    }
}

#[test]
fn payload_that_is_not_json_claims_is_refused() {
    let id = identifier();
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "kid": "hs"})),
        URL_SAFE_NO_PAD.encode("not json")
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &encoding_key(Algorithm::HS256),
        Algorithm::HS256,
    )
    .expect("signs");
    assert_eq!(
        id.verify_jwt(&format!("{message}.{sig}")).map(|_| ()),
        Err(TokenError::MalformedClaims)
    );
    // duplicate claims are ambiguous: refused rather than first- or last-wins
    let dup = format!(
        r#"{{"sub":"1","sub":"2","exp":{},"iss":"https://issuer.test","aud":"portcullis"}}"#,
        now() + 60
    );
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "kid": "hs"})),
        URL_SAFE_NO_PAD.encode(dup)
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &encoding_key(Algorithm::HS256),
        Algorithm::HS256,
    )
    .expect("signs");
    assert_eq!(
        id.verify_jwt(&format!("{message}.{sig}")).map(|_| ()),
        Err(TokenError::MalformedClaims)
    );
}

#[test]
fn header_attacks_are_refused() {
    let id = identifier();
    let claims = good_claims();
    use TokenError::*;
    // alg none (CVE-2022-23540), in any case, with and without a signature
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "kid": "hs"})),
            b64(&claims)
        );
        assert_eq!(id.verify_jwt(&token).map(|_| ()), Err(AlgNone), "{alg}");
    }
    // HS/RS confusion: HS256 keyed with the RSA public key PEM (CVE-2015-9235, CVE-2026-44699)
    let pem = std::fs::read(data("keys/rs256.pub.pem")).expect("pem");
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "kid": "rs"})),
        b64(&claims)
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(&pem).expect("key"),
        Algorithm::HS256,
    )
    .expect("signs");
    assert_eq!(
        id.verify_jwt(&format!("{message}.{sig}")).map(|_| ()),
        Err(AlgorithmMismatch)
    );
    // a valid RS256 signature presented under the HMAC kid
    let token = sign(
        json!({"alg": "RS256", "kid": "hs"}),
        claims.clone(),
        Algorithm::RS256,
    );
    assert_eq!(id.verify_jwt(&token).map(|_| ()), Err(AlgorithmMismatch));
    // embedded keys (CVE-2018-0114) are refused even when the signature is by a configured key
    for field in ["jwk", "jku", "x5u", "x5c"] {
        let mut header = json!({"alg": "HS256", "kid": "hs"});
        header[field] = json!({"kty": "oct", "k": "AAAA"});
        let token = sign(header, claims.clone(), Algorithm::HS256);
        assert!(
            matches!(id.verify_jwt(&token), Err(EmbeddedKey(_))),
            "{field}"
        );
    }
    let token = sign(
        json!({"alg": "HS256", "kid": "hs", "crit": ["b64"], "b64": false}),
        claims.clone(),
        Algorithm::HS256,
    );
    assert_eq!(id.verify_jwt(&token).map(|_| ()), Err(CriticalHeader));
    // kid is only looked up in the in-memory map
    for kid in ["nope", "../../etc/passwd", "' OR 1=1 --"] {
        let token = sign(
            json!({"alg": "HS256", "kid": kid}),
            claims.clone(),
            Algorithm::HS256,
        );
        assert_eq!(id.verify_jwt(&token).map(|_| ()), Err(UnknownKid), "{kid}");
    }
    // with several keys a token must say which
    let token = sign(json!({"alg": "HS256"}), claims.clone(), Algorithm::HS256);
    assert_eq!(id.verify_jwt(&token).map(|_| ()), Err(MissingKid));
    // tampered payload
    let token = sign(
        json!({"alg": "HS256", "kid": "hs"}),
        claims.clone(),
        Algorithm::HS256,
    );
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with(claims.clone(), "sub", json!("1"))),
        parts[2]
    );
    assert_eq!(id.verify_jwt(&forged).map(|_| ()), Err(BadSignature));
    // structure
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "!!.b.c",
        &format!("{token}."),
    ] {
        assert!(id.verify_jwt(bad).is_err(), "{bad:?}");
    }
    let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
    assert_eq!(id.verify_jwt(&padded).map(|_| ()), Err(MalformedHeader));
}

#[test]
fn single_key_needs_no_kid() {
    let cfg = config(vec![key_config("only", "HS256", None)]);
    let id = Identifier::new(KeySet::from_config(&cfg, test_env).expect("loads"), &cfg);
    let token = sign(json!({"alg": "HS256"}), good_claims(), Algorithm::HS256);
    assert!(id.verify_jwt(&token).is_ok());
}

#[test]
fn psychic_signature_is_refused() {
    // CVE-2022-21449: an ECDSA signature with r = s = 0 must never verify.
    let id = identifier();
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "ES256", "kid": "es"})),
        b64(&good_claims())
    );
    let zero = URL_SAFE_NO_PAD.encode([0u8; 64]);
    assert_eq!(
        id.verify_jwt(&format!("{message}.{zero}")).map(|_| ()),
        Err(TokenError::BadSignature)
    );
    let empty = format!("{message}.");
    assert!(id.verify_jwt(&empty).is_err());
}

#[test]
fn bad_key_configuration_is_reported() {
    let cases: Vec<(KeyConfig, &str)> = vec![
        (key_config("k", "HS257", None), "unsupported algorithm"),
        (key_config("k", "none", None), "unsupported algorithm"),
        (
            key_config("k", "RS256", Some("keys/es256.pub.pem")),
            "not a RS256 public key",
        ),
        (
            key_config("k", "RS256", Some("keys/missing.pem")),
            "cannot read",
        ),
        (
            KeyConfig {
                secret_env: Some("UNSET_VARIABLE".to_owned()),
                ..key_config("k", "HS256", None)
            },
            "UNSET_VARIABLE is not set",
        ),
        (
            KeyConfig {
                secret_env: None,
                ..key_config("k", "HS256", None)
            },
            "exactly one",
        ),
    ];
    for (kc, expected) in cases {
        let err = KeySet::from_config(&config(vec![kc]), test_env).expect_err(expected);
        assert!(err.to_string().contains(expected), "{err} vs {expected}");
    }
    let short = |_: &str| Some("short".to_owned());
    let err = KeySet::from_config(&config(vec![key_config("k", "HS256", None)]), short)
        .expect_err("short secret");
    assert!(err.to_string().contains("shorter"), "{err}");
    let two = config(vec![
        key_config("k", "HS256", None),
        key_config("k", "HS256", None),
    ]);
    assert!(KeySet::from_config(&two, test_env).is_err());
}

#[test]
fn jwks_file_keys_verify_and_symmetric_keys_are_refused() {
    // Public JWKs from the Wycheproof set: RSA and EC keys load with their alg.
    let text = std::fs::read_to_string(data("wycheproof/json_web_key_test.json")).expect("vectors");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert!(v["testGroups"].is_array());
    let jwks = r#"{"keys":[{"kty":"oct","kid":"s","alg":"HS256","k":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;
    assert!(KeySet::parse_jwks(jwks)
        .expect_err("oct refused")
        .contains("symmetric"));
    let pem_jwk =
        r#"{"keys":[{"kty":"EC","kid":"e","crv":"P-256","alg":"ES384","x":"AAAA","y":"AAAA"}]}"#;
    assert!(KeySet::parse_jwks(pem_jwk).is_err());
}

/// Every Wycheproof JWK-set case: a set is loaded whole or refused whole (mixed symmetric and
/// asymmetric keys, duplicate kids, ROCA moduli, 1024-bit RSA, exponent 1, HMAC keys shorter
/// than their hash, unsupported algorithms, curves or uses); then its JWS must verify or not.
#[test]
fn wycheproof_json_web_key_vectors() {
    let text = std::fs::read_to_string(data("wycheproof/json_web_key_test.json")).expect("vectors");
    let vectors: Value = serde_json::from_str(&text).expect("json");
    let (mut valid, mut invalid) = (0, 0);
    for group in vectors["testGroups"].as_array().expect("groups") {
        let set = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let keys = KeySet::parse_jwk_set(&set.to_string(), true).map(KeySet::from_keys);
        for t in group["tests"].as_array().expect("tests") {
            let verified = match &keys {
                Ok(keys) => keys
                    .verify_signature(t["jws"].as_str().expect("compact"))
                    .is_ok(),
                Err(_) => false,
            };
            match t["result"].as_str() {
                Some("valid") => {
                    assert!(
                        verified,
                        "tcId {} ({}) must verify: {:?}",
                        t["tcId"],
                        group["comment"],
                        keys.as_ref().err()
                    );
                    valid += 1;
                }
                _ => {
                    assert!(
                        !verified,
                        "tcId {} ({}) must be refused",
                        t["tcId"], group["comment"]
                    );
                    invalid += 1;
                }
            }
        }
    }
    assert!(
        valid >= 4 && invalid >= 20,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn roca_fingerprint_flags_only_vulnerable_moduli() {
    let text = std::fs::read_to_string(data("wycheproof/json_web_key_test.json")).expect("vectors");
    assert!(text.contains("kid-rsa-roca-sign"));
    let err = KeySet::parse_jwk_set(
        &serde_json::from_str::<Value>(&text).expect("json")["testGroups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["comment"] == "jws_rsa_roca_key")
            .expect("roca group")["public"]
            .to_string(),
        false,
    )
    .expect_err("ROCA key refused");
    // Every RSA key of the JWS vectors passes the same check, so false positives fail there.
    assert!(err.contains("ROCA"), "{err}");
}

/// Wycheproof `base64` group vectors whose labels contradict each other (see the test).
const CONTRADICTORY: [u64; 4] = [367, 370, 372, 373];

/// Every Wycheproof JWS case: `invalid` ones are refused; `valid` ones for a supported
/// algorithm are accepted. Payloads are not JWT claims, so this runs at the signature layer.
#[test]
fn wycheproof_json_web_signature_vectors() {
    let text =
        std::fs::read_to_string(data("wycheproof/json_web_signature_test.json")).expect("vectors");
    let vectors: Value = serde_json::from_str(&text).expect("json");
    let (mut accepted, mut refused, mut unsupported, mut pinned) = (0, 0, 0, 0);
    for group in vectors["testGroups"].as_array().expect("groups") {
        let jwk_json = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let key = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(jwk_json.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| jwt::VerifyingKey::from_jwk(&jwk));
        let tests = group["tests"].as_array().expect("tests");
        let keys = match key {
            Ok(k) => KeySet::from_keys([k]),
            Err(e) => {
                // Only an algorithm we do not support may fail to load, and then nothing verifies.
                let alg = jwk_json["alg"].as_str().unwrap_or("");
                let valid = tests.iter().filter(|t| t["result"] == "valid").count();
                assert!(
                    valid == 0 || alg == "ES521" || alg == "ES512",
                    "group {}: key refused: {e}",
                    group["comment"]
                );
                unsupported += tests.len();
                continue;
            }
        };
        for t in tests {
            let id = &t["tcId"];
            if let Some(tc) = id.as_u64().filter(|tc| CONTRADICTORY.contains(tc)) {
                // Labelled invalid yet byte-identical to a valid vector (367, 370), or labelled
                // valid yet holding '?' outside the base64url alphabet (372, 373): no verifier
                // can satisfy both labels. We accept the former and refuse the latter.
                let jws = t["jws"].as_str().expect("compact");
                let ok = keys.verify_signature(jws).is_ok();
                assert_eq!(ok, !jws.contains('?'), "tcId {tc}");
                continue;
            }
            let outcome = match t["jws"].as_str() {
                Some(jws) => keys.verify_signature(jws).map(|_| ()),
                None => Err(TokenError::Malformed), // JSON serialization: not a compact token
            };
            match t["result"].as_str() {
                Some("valid") if outcome == Err(TokenError::AlgorithmMismatch) => {
                    // RFC 7520 keys that Wycheproof labels with one alg, signing with another:
                    // our rule is that the key's algorithm is the only one it verifies.
                    let alg_in_token =
                        t["jws"]
                            .as_str()
                            .and_then(|j| j.split('.').next())
                            .map(|h| {
                                let h: Value = serde_json::from_slice(
                                    &URL_SAFE_NO_PAD.decode(h).expect("b64"),
                                )
                                .expect("json");
                                h["alg"].as_str().unwrap_or("").to_owned()
                            });
                    assert_ne!(
                        alg_in_token.as_deref(),
                        jwk_json["alg"].as_str(),
                        "tcId {id}: mismatch must be real"
                    );
                    pinned += 1;
                }
                Some("valid") => {
                    assert!(
                        outcome.is_ok(),
                        "tcId {id} ({}) must verify: {outcome:?}",
                        t["comment"]
                    );
                    accepted += 1;
                }
                Some("invalid") => {
                    assert!(
                        outcome.is_err(),
                        "tcId {id} ({}) must be refused",
                        t["comment"]
                    );
                    refused += 1;
                }
                other => panic!("tcId {id}: unexpected result {other:?}"),
            }
        }
    }
    assert!(accepted >= 40, "accepted only {accepted}");
    assert!(refused >= 340, "refused only {refused}");
    assert!(
        unsupported <= 10,
        "{unsupported} vectors were for unsupported keys"
    );
    assert!(
        pinned <= 2,
        "{pinned} valid vectors refused for algorithm pinning"
    );
}

#[test]
fn verified_tokens_are_cached_by_digest_and_expire_with_the_token() {
    let cfg = JwtConfig {
        cache_ttl: Duration::from_secs(600),
        ..config(vec![key_config("hs", "HS256", None)])
    };
    let id = Identifier::new(KeySet::from_config(&cfg, test_env).expect("loads"), &cfg);
    let token = sign(
        json!({"alg": "HS256", "kid": "hs"}),
        good_claims(),
        Algorithm::HS256,
    );
    let first = id.verify_jwt(&token).expect("valid");
    let second = id.verify_jwt(&token).expect("valid");
    assert!(
        Arc::ptr_eq(&first, &second),
        "second verification is served from the cache"
    );
    assert!(id.cache.contains_key(&digest(&token)));
    // A cached identity whose token has expired is not served.
    let mut stale = (*first).clone();
    stale.expires_at = (now() - 3600) as f64;
    id.cache.insert(digest(&token), Arc::new(stale));
    let again = id.verify_jwt(&token).expect("re-verified");
    assert!(again.expires_at > now() as f64);
    // Failures are never cached.
    let bad = sign(
        json!({"alg": "HS256", "kid": "hs"}),
        with(good_claims(), "exp", json!(now() - 3600)),
        Algorithm::HS256,
    );
    assert!(id.verify_jwt(&bad).is_err());
    assert!(!id.cache.contains_key(&digest(&bad)));
}

#[test]
fn jwks_file_from_config_verifies_its_tokens() {
    // The Wycheproof ES256 public key and its valid JWS, served from a JWKS file.
    let text =
        std::fs::read_to_string(data("wycheproof/json_web_signature_test.json")).expect("vectors");
    let vectors: Value = serde_json::from_str(&text).expect("json");
    let group = vectors["testGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["comment"] == "es256")
        .expect("es256 group");
    let jws = group["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["result"] == "valid")
        .expect("valid")["jws"]
        .as_str()
        .expect("compact")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [group["public"]]}).to_string()).expect("write");
    let cfg = JwtConfig {
        jwks_file: Some(path.clone()),
        ..config(vec![key_config("hs", "HS256", None)])
    };
    let keys = KeySet::from_config(&cfg, test_env).expect("jwks loads");
    assert_eq!(keys.len(), 2);
    assert!(keys.verify_signature(&jws).is_ok());
    // A JWKS file that is not one is a configuration error naming the file.
    std::fs::write(&path, "{\"keys\": 3}").expect("write");
    let err = KeySet::from_config(&cfg, test_env).expect_err("bad jwks");
    assert!(err.to_string().contains("jwks.json"), "{err}");
}
