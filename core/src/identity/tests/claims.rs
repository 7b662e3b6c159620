//! Verification and claims: each algorithm, the claim matrix, header attacks (alg none,
//! HS/RS confusion, embedded keys, psychic signatures) and the verified-token cache.

use super::*;

#[test]
fn accepts_each_supported_algorithm() {
    let id = identifier();
    for (kid, alg, algorithm) in [
        ("hs", "HS256", Algorithm::HS256),
        ("rs", "RS256", Algorithm::RS256),
        ("es", "ES256", Algorithm::ES256),
        ("ed", "EdDSA", Algorithm::EdDSA),
    ] {
        let token = sign(
            json!({"alg": alg, "kid": kid, "typ": "JWT"}),
            good_claims(),
            algorithm,
        );
        let p = id
            .verify_jwt(&token)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let Principal::Jwt(j) = &*p else {
            panic!("{alg}: not a JWT principal: {p:?}")
        };
        assert_eq!(j.subject, "42");
        assert_eq!(j.email.as_deref(), Some("ada@example.com"));
        assert_eq!(j.roles, vec!["admin"]);
        assert_eq!(j.permissions, vec!["roles:read"]);
        assert_eq!(j.jti.as_deref(), Some("t1"));
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
    let message = format!(
        "{}.{}",
        b64(&json!({"alg": "HS256", "kid": "rs"})),
        b64(&claims)
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(RS256_PUB).expect("key"),
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
    let keys = KeySet::new([hmac_key("only")], None).expect("one key");
    let id = Identifier::new(keys, settings());
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
fn verified_tokens_are_cached_by_digest_and_expire_with_the_token() {
    let keys = KeySet::new([hmac_key("hs")], None).expect("one key");
    let id = Identifier::new(
        keys,
        JwtSettings {
            cache_ttl: Duration::from_secs(600),
            ..settings()
        },
    );
    let token = sign(
        json!({"alg": "HS256", "kid": "hs"}),
        good_claims(),
        Algorithm::HS256,
    );
    let first = id.verify_jwt(&token).expect("valid");
    let second = id.verify_jwt(&token).expect("valid");
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "second verification is served from the cache"
    );
    assert!(id.cache.contains_key(&digest(&token)));
    // A cached identity whose token has expired is not served.
    let Principal::Jwt(mut stale) = (*first).clone() else {
        panic!("not a JWT principal")
    };
    stale.expires_at = UnixTime::from_secs(now() - 3600);
    id.cache
        .insert(digest(&token), std::sync::Arc::new(Principal::Jwt(stale)));
    let again = id.verify_jwt(&token).expect("re-verified");
    assert!(again.expires_at() > Some(UnixTime::from_secs(now())));
    // Failures are never cached.
    let bad = sign(
        json!({"alg": "HS256", "kid": "hs"}),
        with(good_claims(), "exp", json!(now() - 3600)),
        Algorithm::HS256,
    );
    assert!(id.verify_jwt(&bad).is_err());
    assert!(!id.cache.contains_key(&digest(&bad)));
}
