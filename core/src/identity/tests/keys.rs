//! Keys from bytes: PEM and JWKS keys held to one set of strength rules, ROCA from either
//! source, signing keys that mint what their set verifies, and JWKS keys that verify.

use super::*;

/// `Ok` when the key must load, else a test its refusal must pass.
type Expect = Result<(), fn(&KeyError) -> bool>;

/// One strength rule for every key source (issue 8, hole 4): PEM keys are held to the rules
/// JWKs are, and each refusal names its condition.
#[test]
fn pem_keys_pass_the_same_strength_rules_as_jwks() {
    use Algorithm::*;
    let public: Vec<(&str, Algorithm, &[u8], Expect)> = vec![
        ("rsa spki", RS256, RS256_PUB, Ok(())),
        ("rsa pkcs1", PS384, RS256_PKCS1_PUB, Ok(())),
        ("ec p-256", ES256, ES256_PUB, Ok(())),
        ("ec p-384", ES384, P384_PUB, Ok(())),
        ("ed25519", EdDSA, ED25519_PUB, Ok(())),
        (
            "rsa 1024",
            RS256,
            RSA1024_PUB,
            Err(|e| matches!(e, KeyError::RsaKeyTooShort { bits: 1024 })),
        ),
        (
            "roca",
            RS256,
            ROCA_PUB,
            Err(|e| matches!(e, KeyError::RocaVulnerable)),
        ),
        (
            "p-384 for ES256",
            ES256,
            P384_PUB,
            Err(|e| {
                matches!(
                    e,
                    KeyError::CurveMismatch {
                        curve: Curve::P384,
                        ..
                    }
                )
            }),
        ),
        (
            "p-256 for ES384",
            ES384,
            ES256_PUB,
            Err(|e| {
                matches!(
                    e,
                    KeyError::CurveMismatch {
                        curve: Curve::P256,
                        ..
                    }
                )
            }),
        ),
        (
            "ec for RS256",
            RS256,
            ES256_PUB,
            Err(|e| {
                matches!(
                    e,
                    KeyError::WrongKeyType {
                        algorithm: "RS256",
                        ..
                    }
                )
            }),
        ),
        (
            "rsa for EdDSA",
            EdDSA,
            RS256_PUB,
            Err(|e| {
                matches!(
                    e,
                    KeyError::WrongKeyType {
                        algorithm: "EdDSA",
                        ..
                    }
                )
            }),
        ),
        (
            "ed25519 for ES256",
            ES256,
            ED25519_PUB,
            Err(|e| matches!(e, KeyError::WrongKeyType { .. })),
        ),
        (
            "private key as public",
            RS256,
            RS256_KEY,
            Err(
                |e| matches!(e, KeyError::UnexpectedPemLabel { label, .. } if label == "PRIVATE KEY"),
            ),
        ),
        (
            "not pem",
            RS256,
            b"ssh-rsa AAAA",
            Err(|e| matches!(e, KeyError::PemParse { .. })),
        ),
        (
            "pem of garbage",
            RS256,
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            Err(|e| matches!(e, KeyError::MalformedKey { .. })),
        ),
    ];
    for (name, alg, pem, expected) in public {
        match (VerifyingKey::from_pem("k", alg, pem), expected) {
            (Ok(key), Ok(())) => assert_eq!(key.algorithm, alg, "{name}"),
            (Err(e), Err(is)) => assert!(is(&e), "{name}: {e}"),
            (got, want) => panic!("{name}: got {got:?}, want {}", want.is_ok()),
        }
    }
    let private: Vec<(&str, Algorithm, &[u8], bool)> = vec![
        ("rsa", RS256, RS256_KEY, true),
        ("ec", ES256, ES256_KEY, true),
        ("ed25519", EdDSA, ED25519_KEY, true),
        ("rsa 1024", RS256, RSA1024_KEY, false),
        ("ec for ES384", ES384, ES256_KEY, false),
        ("public key as private", RS256, RS256_PUB, false),
    ];
    for (name, alg, pem, ok) in private {
        let got = SigningKey::from_pem("k", alg, pem);
        assert_eq!(
            got.is_ok(),
            ok,
            "{name}: {:?}",
            got.err().map(|e| e.to_string())
        );
    }
    let err = SigningKey::from_pem("k", RS256, RSA1024_KEY).expect_err("weak");
    assert!(
        matches!(err, KeyError::RsaKeyTooShort { bits: 1024 }),
        "{err}"
    );
    // Secrets: at least the hash size, and only for HMAC.
    for (alg, len, ok) in [
        (HS256, 31, false),
        (HS256, 32, true),
        (HS384, 47, false),
        (HS384, 48, true),
        (HS512, 63, false),
        (HS512, 64, true),
        (RS256, 64, false),
    ] {
        let secret = vec![7u8; len];
        assert_eq!(
            VerifyingKey::hmac("k", alg, &secret).is_ok(),
            ok,
            "{alg:?} {len}"
        );
        assert_eq!(
            SigningKey::hmac("k", alg, &secret).is_ok(),
            ok,
            "{alg:?} {len}"
        );
    }
    let err = VerifyingKey::hmac("k", HS256, b"short").expect_err("short");
    assert_eq!(
        err.to_string(),
        "the HMAC secret has 5 bytes, shorter than the 32 HS256 needs"
    );
}

/// The ROCA PEM is the Wycheproof ROCA JWK: the fingerprint is refused from either source.
#[test]
fn roca_fingerprint_flags_only_vulnerable_moduli() {
    let vectors: Value = serde_json::from_str(JWK_VECTORS).expect("json");
    let group = vectors["testGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["comment"] == "jws_rsa_roca_key")
        .expect("roca group");
    let err = jwk::parse_jwk_set(&group["public"].to_string(), false).expect_err("ROCA JWK");
    assert!(
        matches!(
            err,
            JwkSetError::Key {
                source: JwkError::Key(KeyError::RocaVulnerable),
                ..
            }
        ),
        "{err}"
    );
    let n = URL_SAFE_NO_PAD
        .decode(group["public"]["keys"][0]["n"].as_str().expect("n"))
        .expect("b64");
    match super::pem::public_key(ROCA_PUB).expect("parses") {
        super::pem::PublicKey::Rsa { modulus, .. } => assert_eq!(modulus, n, "same key"),
        _ => panic!("not RSA"),
    }
    let err = VerifyingKey::from_pem("roca", Algorithm::RS256, ROCA_PUB).expect_err("ROCA PEM");
    assert!(matches!(err, KeyError::RocaVulnerable), "{err}");
    assert!(err.to_string().contains("ROCA"), "{err}");
    // Our own RSA test key, and every RSA key of the JWS vectors (which must load there),
    // pass the same check: no false positives.
    assert!(VerifyingKey::from_pem("rs", Algorithm::RS256, RS256_PUB).is_ok());
}

/// Keys loaded the way a JWKS file is loaded verify signatures. The Wycheproof JWK sets: a
/// symmetric set is refused whole; from any other set, each JWS labelled valid verifies (with
/// the set's key) and each labelled invalid does not. Then our PEM test keys, published as a
/// JWKS: each verifies a token its private key signed, and refuses one whose payload was
/// swapped or whose header names another algorithm.
#[test]
fn jwks_file_keys_verify_and_symmetric_keys_are_refused() {
    let vectors: Value = serde_json::from_str(JWK_VECTORS).expect("json");
    let (mut verified, mut refused, mut symmetric_sets) = (0, 0, 0);
    for group in vectors["testGroups"].as_array().expect("groups") {
        let set = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let tests = group["tests"].as_array().expect("tests");
        let symmetric = set["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kty"] == "oct");
        let loaded = jwk::parse_jwks(&set.to_string());
        if symmetric {
            assert!(
                matches!(loaded, Err(JwkSetError::SymmetricKeyInJwks)),
                "{}: {loaded:?}",
                group["comment"]
            );
            symmetric_sets += 1;
            continue;
        }
        let keys = match loaded {
            Ok(keys) => KeySet::new(keys, None).expect("distinct kids"),
            Err(e) => {
                // A refused set verifies nothing, so none of its JWS may be labelled valid.
                assert!(
                    tests.iter().all(|t| t["result"] == "invalid"),
                    "{}: a set with valid signatures was refused: {e}",
                    group["comment"]
                );
                refused += tests.len();
                continue;
            }
        };
        for t in tests {
            let jws = t["jws"].as_str().expect("compact");
            let outcome = keys.verify_signature(jws).map(|(_, key)| key.kid.clone());
            if t["result"] == "valid" {
                let kid = outcome.unwrap_or_else(|e| panic!("tcId {} must verify: {e}", t["tcId"]));
                assert_eq!(Some(kid.as_str()), set["keys"][0]["kid"].as_str());
                verified += 1;
            } else {
                assert!(outcome.is_err(), "tcId {} must be refused", t["tcId"]);
                refused += 1;
            }
        }
    }
    assert!(
        verified >= 1 && refused >= 8 && symmetric_sets >= 10,
        "{verified} verified, {refused} refused, {symmetric_sets} symmetric sets"
    );

    // Our PEM test keys as JWKs, with the components the PEM parser found.
    let jwk_of = |kid: &str, alg: &str, pem: &[u8]| {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match super::pem::public_key(pem).expect("pem") {
            super::pem::PublicKey::Rsa {
                modulus, exponent, ..
            } => json!({"kty": "RSA", "kid": kid, "alg": alg, "n": b(&modulus), "e": b(&exponent)}),
            super::pem::PublicKey::Ec { point, .. } => {
                json!({"kty": "EC", "kid": kid, "alg": alg, "crv": "P-256",
                       "x": b(&point[1..33]), "y": b(&point[33..])})
            }
            super::pem::PublicKey::Ed25519 { raw } => {
                json!({"kty": "OKP", "kid": kid, "alg": alg, "crv": "Ed25519", "x": b(&raw)})
            }
        }
    };
    let jwks = json!({"keys": [
        jwk_of("rs", "RS256", RS256_PUB),
        jwk_of("es", "ES256", ES256_PUB),
        jwk_of("ed", "EdDSA", ED25519_PUB),
    ]});
    let keys = KeySet::new(jwk::parse_jwks(&jwks.to_string()).expect("loads"), None)
        .expect("distinct kids");
    assert_eq!(keys.len(), 3);
    let algs = [
        ("rs", Algorithm::RS256),
        ("es", Algorithm::ES256),
        ("ed", Algorithm::EdDSA),
    ];
    for (kid, alg) in algs {
        let name = format!("{alg:?}");
        let token = sign(json!({"alg": name, "kid": kid}), good_claims(), alg);
        let (payload, key) = keys.verify_signature(&token).expect(kid);
        assert_eq!(key.kid, kid);
        assert_eq!(
            serde_json::from_slice::<Value>(&payload).expect("json")["sub"],
            "42"
        );
        // This key's signature over other claims, spliced onto these: refused.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = sign(
            json!({"alg": name, "kid": kid}),
            with(good_claims(), "sub", json!("1")),
            alg,
        );
        parts[1] = forged.split('.').nth(1).expect("payload").to_owned();
        assert_eq!(
            keys.verify_signature(&parts.join(".")).map(|_| ()),
            Err(TokenError::BadSignature),
            "{kid}: a signature over other claims"
        );
    }
    // A token naming a JWKS key's kid but another algorithm: refused before the signature.
    let other = sign(
        json!({"alg": "HS256", "kid": "rs"}),
        good_claims(),
        Algorithm::HS256,
    );
    assert_eq!(
        keys.verify_signature(&other).map(|_| ()),
        Err(TokenError::AlgorithmMismatch)
    );
}

/// A signing key from a PEM private key (or a secret) mints tokens its set's verifying key
/// accepts: the header names its kid and its one algorithm.
#[test]
fn signing_keys_from_pem_mint_tokens_that_verify() {
    let cases: [(&str, Algorithm, &[u8], &[u8]); 3] = [
        ("rs", Algorithm::RS256, RS256_PUB, RS256_KEY),
        ("es", Algorithm::ES256, ES256_PUB, ES256_KEY),
        ("ed", Algorithm::EdDSA, ED25519_PUB, ED25519_KEY),
    ];
    for (kid, alg, public, private) in cases {
        let signing = SigningKey::from_pem(kid, alg, private).expect(kid);
        let verifying = VerifyingKey::from_pem(kid, alg, public).expect(kid);
        let keys = KeySet::new([verifying, hmac_key("hs")], Some(signing)).expect("set");
        let token = keys.mint(&good_claims()).expect("mints");
        let (_, key) = keys.verify_signature(&token).expect(kid);
        assert_eq!((key.kid.as_str(), key.algorithm), (kid, alg));
        let id = Identifier::new(keys, settings());
        assert_eq!(id.verify_jwt(&token).expect(kid).subject_id(), "42");
    }
    let signing = SigningKey::hmac("hs", Algorithm::HS256, SECRET.as_bytes()).expect("hmac");
    let keys = KeySet::new([hmac_key("hs")], Some(signing)).expect("set");
    let token = keys.mint(&good_claims()).expect("mints");
    assert!(keys.verify_signature(&token).is_ok());
    // Without a signing key, minting is refused.
    let keys = KeySet::new([hmac_key("hs")], None).expect("set");
    assert!(matches!(
        keys.mint(&good_claims()),
        Err(KeyError::NoSigningKey { .. })
    ));
}
