//! The Wycheproof JWK-set and JWS vectors, run through the key loaders and the verifier.

use super::*;

/// Every Wycheproof JWK-set case: a set is loaded whole or refused whole (mixed symmetric and
/// asymmetric keys, duplicate kids, ROCA moduli, 1024-bit RSA, exponent 1, HMAC keys shorter
/// than their hash, unsupported algorithms, curves or uses); then its JWS must verify or not.
#[test]
fn wycheproof_json_web_key_vectors() {
    let vectors: Value = serde_json::from_str(JWK_VECTORS).expect("json");
    let (mut valid, mut invalid) = (0, 0);
    for group in vectors["testGroups"].as_array().expect("groups") {
        let set = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let keys = jwk::parse_jwk_set(&set.to_string(), true).map(KeySet::from_keys);
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

/// Wycheproof `base64` group vectors whose labels contradict each other (see the test).
const CONTRADICTORY: [u64; 4] = [367, 370, 372, 373];

/// Every Wycheproof JWS case: `invalid` ones are refused; `valid` ones for a supported
/// algorithm are accepted. Payloads are not JWT claims, so this runs at the signature layer.
#[test]
fn wycheproof_json_web_signature_vectors() {
    let vectors: Value = serde_json::from_str(JWS_VECTORS).expect("json");
    let (mut accepted, mut refused, mut unsupported, mut pinned) = (0, 0, 0, 0);
    for group in vectors["testGroups"].as_array().expect("groups") {
        let jwk_json = if group["public"].is_object() {
            &group["public"]
        } else {
            &group["private"]
        };
        let key = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(jwk_json.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| VerifyingKey::from_jwk(&jwk).map_err(|e| crate::error_chain(&e)));
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
