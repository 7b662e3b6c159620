//! The JWT header and claim parser. Arbitrary tokens never panic `KeySet::verify_signature`;
//! tokens whose header and payload are fuzzed but whose HS256 signature is real reach the
//! header checks and `ClaimRules::check`. Whatever passes satisfies every documented rule.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::identity::UnixTime;
use serde_json::Value;

#[derive(Debug, Arbitrary)]
enum Input {
    /// A token as text.
    Raw(String),
    /// Header and payload bytes, signed with the configured key.
    Signed { header: Vec<u8>, payload: Vec<u8> },
    /// Claims only, checked as a verified payload.
    Claims(Vec<u8>),
}

fn check_claims(payload: &[u8]) {
    let now = UnixTime::from_secs(portcullis_fuzz::now());
    let Ok(claims) = portcullis_fuzz::rules().check(payload, now) else {
        return;
    };
    let raw: Value = serde_json::from_slice(payload).expect("accepted claims are JSON");
    let exp = raw["exp"].as_f64().expect("exp is a number");
    assert!(
        now.as_secs_f64() <= exp + 30.0,
        "expired token accepted: {raw}"
    );
    assert_eq!(raw["iss"], portcullis_fuzz::ISSUER, "{raw}");
    let aud_ok = match &raw["aud"] {
        Value::String(a) => a == portcullis_fuzz::AUDIENCE,
        Value::Array(list) => list.iter().any(|a| a == portcullis_fuzz::AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "{raw}");
    let sub = claims.sub.as_deref().expect("sub");
    assert!(!sub.is_empty() && sub.len() <= 256 && !sub.chars().any(char::is_control));
    if let Some(nbf) = raw.get("nbf") {
        assert!(nbf.as_f64().expect("nbf is a number") <= now.as_secs_f64() + 30.0);
    }
}

fuzz_target!(|input: Input| {
    let keys = portcullis_fuzz::keys();
    match input {
        Input::Raw(token) => {
            if let Ok((payload, _)) = keys.verify_signature(&token) {
                // Only a token signed with the configured secret verifies.
                let mut parts = token.split('.');
                let header = parts.next().unwrap_or_default();
                let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(header)
                    .expect("verified header is base64url");
                let header: Value = serde_json::from_slice(&header).expect("header is JSON");
                assert_eq!(header["alg"], "HS256", "{token}");
                check_claims(&payload);
            }
        }
        Input::Signed { header, payload } => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let signed = format!("{}.{}", b64.encode(&header), b64.encode(&payload));
            let key = jsonwebtoken::EncodingKey::from_secret(portcullis_fuzz::SECRET).expect("key");
            let signature =
                jsonwebtoken::crypto::sign(signed.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                    .expect("sign");
            let token = format!("{signed}.{signature}");
            match keys.verify_signature(&token) {
                Ok((verified, _)) => {
                    assert_eq!(verified, payload);
                    let h: Value = serde_json::from_slice(&header).expect("header is JSON");
                    assert_eq!(h["alg"], "HS256", "alg must come from the key");
                    for embedded in ["jwk", "jku", "x5u", "x5c", "crit"] {
                        assert!(
                            h.get(embedded).is_none_or(Value::is_null),
                            "{embedded} accepted: {h}"
                        );
                    }
                    if let Some(kid) = h.get("kid").filter(|k| !k.is_null()) {
                        assert_eq!(kid, portcullis_fuzz::KID);
                    }
                    check_claims(&verified);
                }
                Err(_) => {}
            }
        }
        Input::Claims(payload) => check_claims(&payload),
    }
});
