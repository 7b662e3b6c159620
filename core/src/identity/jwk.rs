//! JWKs and JWK sets, as text, into verifying keys. A JWK's `alg` (or the one its curve
//! implies) is the only algorithm it verifies; it must be for signatures and pass the same
//! `strength` rules as a PEM key; a set is loaded whole or refused whole.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::key_error::Curve;
use super::keys::{KeyError, VerifyingKey};
use super::strength::{self, KeyShape};

/// Why one JWK is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwkError {
    #[error("no kid")]
    MissingKid,
    #[error("the key is not for signatures (use)")]
    NotForSignatures,
    #[error("key_ops do not include verify")]
    NoVerifyOperation,
    #[error("unsupported alg {alg}")]
    UnsupportedAlgorithm { alg: String },
    #[error("no alg, and the key's curve implies none")]
    MissingAlgorithm,
    #[error("unsupported key type")]
    UnsupportedKeyType,
    #[error("{field} is not base64url")]
    BadBase64 {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a JWK set is refused.
#[derive(Debug, thiserror::Error)]
pub enum JwkSetError {
    #[error("not a JWKS document")]
    NotJwks {
        #[source]
        source: serde_json::Error,
    },
    #[error("symmetric keys are not accepted in a JWKS file")]
    SymmetricKeyInJwks,
    #[error("the set mixes symmetric and asymmetric keys")]
    MixedSymmetry,
    #[error("kid {kid:?} is used twice")]
    DuplicateKid { kid: String },
    #[error("key {index}{}", kid.as_deref().map(|k| format!(" (kid {k:?})")).unwrap_or_default())]
    Key {
        index: usize,
        kid: Option<String>,
        #[source]
        source: JwkError,
    },
}

/// Public keys from a JWKS document. Symmetric (`oct`) keys are refused here: a shared secret
/// belongs in `secret_env`/`secret_file`, not in a key set that may be published.
pub fn parse_jwks(text: &str) -> Result<Vec<VerifyingKey>, JwkSetError> {
    parse_jwk_set(text, false)
}

/// Keys from a JWK set. The whole set is refused when any key is, when two keys share a `kid`,
/// or when it mixes symmetric and asymmetric keys (which would be read ambiguously).
pub fn parse_jwk_set(text: &str, allow_symmetric: bool) -> Result<Vec<VerifyingKey>, JwkSetError> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|source| JwkSetError::NotJwks { source })?;
    let symmetric = |jwk: &Jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
    let symmetric_count = set.keys.iter().filter(|k| symmetric(k)).count();
    if symmetric_count > 0 && !allow_symmetric {
        return Err(JwkSetError::SymmetricKeyInJwks);
    }
    if symmetric_count > 0 && symmetric_count < set.keys.len() {
        return Err(JwkSetError::MixedSymmetry);
    }
    let mut out: Vec<VerifyingKey> = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let key = VerifyingKey::from_jwk(jwk).map_err(|source| JwkSetError::Key {
            index,
            kid: jwk.common.key_id.clone(),
            source,
        })?;
        if out.iter().any(|k| k.kid == key.kid) {
            return Err(JwkSetError::DuplicateKid { kid: key.kid });
        }
        out.push(key);
    }
    Ok(out)
}

impl VerifyingKey {
    /// A key from a JWK: its `alg` (or the one its curve implies) is the only algorithm it
    /// verifies; the key must fit that algorithm and pass the strength rules; encryption-only
    /// keys are refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwkError> {
        let kid = jwk.common.key_id.clone().ok_or(JwkError::MissingKid)?;
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            return Err(JwkError::NotForSignatures);
        }
        let symmetric = matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
        if let Some(ops) = &jwk.common.key_operations {
            let verifies = ops.iter().any(|op| {
                matches!(op, KeyOperations::Verify)
                    || (symmetric && matches!(op, KeyOperations::Sign))
            });
            if !verifies {
                return Err(JwkError::NoVerifyOperation);
            }
        }
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(alg), _) => {
                key_algorithm(*alg).ok_or_else(|| JwkError::UnsupportedAlgorithm {
                    alg: format!("{alg:?}"),
                })?
            }
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P384 => {
                Algorithm::ES384
            }
            (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            (None, _) => return Err(JwkError::MissingAlgorithm),
        };
        let decode = |field: &'static str, value: &str| {
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|source| JwkError::BadBase64 { field, source })
        };
        match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let (modulus, exponent) = (decode("n", &p.n)?, decode("e", &p.e)?);
                strength::check(
                    &KeyShape::Rsa {
                        modulus: &modulus,
                        exponent: &exponent,
                    },
                    algorithm,
                )?;
            }
            AlgorithmParameters::EllipticCurve(p) => {
                strength::check(&KeyShape::Ec(curve(&p.curve)), algorithm)?;
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                strength::check(&KeyShape::Okp(curve(&p.curve)), algorithm)?;
            }
            AlgorithmParameters::OctetKey(p) => {
                let len = decode("k", &p.value)?.len();
                strength::check(&KeyShape::Secret { len }, algorithm)?;
            }
            _ => return Err(JwkError::UnsupportedKeyType),
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|source| KeyError::Unusable { source })?;
        Ok(VerifyingKey::checked(&kid, algorithm, key))
    }
}

fn curve(curve: &EllipticCurve) -> Curve {
    match curve {
        EllipticCurve::P256 => Curve::P256,
        EllipticCurve::P384 => Curve::P384,
        EllipticCurve::Ed25519 => Curve::Ed25519,
        EllipticCurve::P521 => Curve::Other("P-521".to_owned()),
        other => Curve::Other(format!("{other:?}")),
    }
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
