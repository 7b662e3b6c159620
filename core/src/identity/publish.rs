//! The keys portcullis signs its own tokens with, published: each public key as a JWK whose
//! `kid` is its RFC 7638 thumbprint, and the key set (first key signs, the rest only verify,
//! so keys can rotate). Built from PEM bytes the caller read; a private key that does not
//! belong to its public key is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::key_error::{algorithm_name, Curve, KeyError};
use super::keys::{KeySet, SigningKey, VerifyingKey};
use super::pem::{self as pem_key, PublicKey};
use super::strength;

/// One published public key.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedKey {
    /// The RFC 7638 thumbprint (base64url SHA-256 of the canonical JWK members).
    pub kid: String,
    pub jwk: Value,
}

/// The canonical members of a public key, in the lexicographic order RFC 7638 requires, and
/// the key's own `kty`-specific fields.
fn required_members(public: &PublicKey) -> Result<Value, KeyError> {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    Ok(match public {
        PublicKey::Rsa {
            modulus, exponent, ..
        } => {
            let strip = |b: &[u8]| {
                let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[first..].to_vec()
            };
            json!({"e": b64(&strip(exponent)), "kty": "RSA", "n": b64(&strip(modulus))})
        }
        PublicKey::Ec { curve, point } => {
            let (crv, len) = match curve {
                Curve::P256 => ("P-256", 32),
                Curve::P384 => ("P-384", 48),
                other => {
                    return Err(KeyError::UnsupportedCurve {
                        curve: other.clone(),
                    })
                }
            };
            // Uncompressed SEC1: 0x04 || x || y.
            if point.len() != 1 + 2 * len || point[0] != 4 {
                return Err(KeyError::UnsupportedCurve {
                    curve: Curve::Other("compressed point".to_owned()),
                });
            }
            json!({"crv": crv, "kty": "EC", "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
        }
        PublicKey::Ed25519 { raw } => json!({"crv": "Ed25519", "kty": "OKP", "x": b64(raw)}),
    })
}

/// The RFC 7638 thumbprint of the canonical members (serde_json writes object keys sorted,
/// with no whitespace: the canonical form).
fn thumbprint(members: &Value) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(members.to_string().as_bytes()))
}

/// A PEM public key for `algorithm`, as a published JWK named by its thumbprint.
pub fn publish(algorithm: Algorithm, public_pem: &[u8]) -> Result<PublishedKey, KeyError> {
    let public = pem_key::public_key(public_pem)?;
    strength::check(&public.shape(), algorithm)?;
    let members = required_members(&public)?;
    let kid = thumbprint(&members);
    let mut jwk = members;
    jwk["kid"] = Value::String(kid.clone());
    jwk["alg"] = Value::String(algorithm_name(algorithm).to_owned());
    jwk["use"] = Value::String("sig".to_owned());
    Ok(PublishedKey { kid, jwk })
}

/// portcullis's own keys: the set that verifies what it minted (with the first key as the
/// signer) and the JWKS document that publishes them.
#[derive(Debug)]
pub struct IssuerKeys {
    pub keys: KeySet,
    pub published: Vec<PublishedKey>,
}

/// One configured key: its algorithm, public PEM and (for the first) private PEM.
pub struct IssuerKeyMaterial<'a> {
    pub algorithm: Algorithm,
    pub public_pem: &'a [u8],
    pub private_pem: Option<&'a [u8]>,
}

impl IssuerKeys {
    /// The first key signs and must have its private key; every key verifies.
    pub fn new(material: &[IssuerKeyMaterial<'_>]) -> Result<Self, KeyError> {
        let mut verifying = Vec::new();
        let mut published = Vec::new();
        let mut signing = None;
        for (i, m) in material.iter().enumerate() {
            let p = publish(m.algorithm, m.public_pem)?;
            let key = VerifyingKey::from_pem(&p.kid, m.algorithm, m.public_pem)?;
            if i == 0 {
                let pem = m
                    .private_pem
                    .ok_or_else(|| KeyError::NoSigningKey { kid: p.kid.clone() })?;
                let signer = SigningKey::from_pem(&p.kid, m.algorithm, pem)?;
                let probe = KeySet::new([], Some(signer))?.mint(&json!({"probe": true}))?;
                let check = KeySet::new(
                    [VerifyingKey::from_pem(&p.kid, m.algorithm, m.public_pem)?],
                    None,
                )?;
                if check.verify_signature(&probe).is_err() {
                    return Err(KeyError::KeyPairMismatch { kid: p.kid });
                }
                signing = Some(SigningKey::from_pem(&p.kid, m.algorithm, pem)?);
            }
            verifying.push(key);
            published.push(p);
        }
        Ok(IssuerKeys {
            keys: KeySet::new(verifying, signing)?,
            published,
        })
    }

    /// The JWKS document (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> Value {
        json!({"keys": self.published.iter().map(|p| p.jwk.clone()).collect::<Vec<_>>()})
    }

    /// Fresh verifying keys for Check's key set (the same material, built again).
    pub fn verifying_keys(
        material: &[IssuerKeyMaterial<'_>],
    ) -> Result<Vec<VerifyingKey>, KeyError> {
        material
            .iter()
            .map(|m| {
                let p = publish(m.algorithm, m.public_pem)?;
                VerifyingKey::from_pem(&p.kid, m.algorithm, m.public_pem)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ES256_PUB: &[u8] = include_bytes!("../../../tests/data/keys/es256.pub.pem");
    const ES256_KEY: &[u8] = include_bytes!("../../../tests/data/keys/es256.key.pem");
    const RS256_PUB: &[u8] = include_bytes!("../../../tests/data/keys/rs256.pub.pem");
    const RS256_KEY: &[u8] = include_bytes!("../../../tests/data/keys/rs256.key.pem");

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1: the example RSA key and its thumbprint.
        let members = json!({
            "e": "AQAB", "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        });
        assert_eq!(
            thumbprint(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn published_key_is_named_by_its_thumbprint() {
        let p = publish(Algorithm::ES256, ES256_PUB).expect("es256");
        assert_eq!(p.jwk["kid"], p.kid);
        assert_eq!(p.jwk["kty"], "EC");
        assert_eq!(p.jwk["alg"], "ES256");
        assert!(p.jwk.get("d").is_none(), "never the private part");
        let members = json!({"crv": p.jwk["crv"], "kty": "EC", "x": p.jwk["x"], "y": p.jwk["y"]});
        assert_eq!(thumbprint(&members), p.kid);
        // The published JWK verifies what the key signs.
        let keys = IssuerKeys::new(&[IssuerKeyMaterial {
            algorithm: Algorithm::ES256,
            public_pem: ES256_PUB,
            private_pem: Some(ES256_KEY),
        }])
        .expect("keys");
        let token = keys.keys.mint(&json!({"sub": "1"})).expect("mint");
        let from_jwks =
            crate::identity::jwk::parse_jwks(&keys.jwks().to_string()).expect("jwks parses");
        let set = KeySet::new(from_jwks, None).expect("set");
        assert!(set.verify_signature(&token).is_ok());
    }

    #[test]
    fn first_key_signs_and_others_only_verify() {
        let keys = IssuerKeys::new(&[
            IssuerKeyMaterial {
                algorithm: Algorithm::ES256,
                public_pem: ES256_PUB,
                private_pem: Some(ES256_KEY),
            },
            IssuerKeyMaterial {
                algorithm: Algorithm::RS256,
                public_pem: RS256_PUB,
                private_pem: None,
            },
        ])
        .expect("keys");
        assert_eq!(keys.published.len(), 2);
        assert_eq!(keys.keys.len(), 2);
        let token = keys.keys.mint(&json!({"sub": "1"})).expect("mint");
        let (_, key) = keys.keys.verify_signature(&token).expect("verifies");
        assert_eq!(key.kid, keys.published[0].kid);
    }

    #[test]
    fn a_private_key_of_another_pair_is_refused() {
        let err = IssuerKeys::new(&[IssuerKeyMaterial {
            algorithm: Algorithm::RS256,
            public_pem: RS256_PUB,
            private_pem: Some(RS256_KEY),
        }]);
        assert!(err.is_ok(), "the matching pair is accepted");
        let other = crate::identity::publish::tests::other_rsa_private();
        let err = IssuerKeys::new(&[IssuerKeyMaterial {
            algorithm: Algorithm::RS256,
            public_pem: RS256_PUB,
            private_pem: Some(other),
        }])
        .expect_err("mismatch");
        assert!(matches!(err, KeyError::KeyPairMismatch { .. }), "{err:?}");
    }

    fn other_rsa_private() -> &'static [u8] {
        include_bytes!("../../../tests/data/keys/rs256-other.key.pem")
    }
}
