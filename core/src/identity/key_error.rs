//! Why a key is refused, and the names a refusal uses (curves, algorithms, the RSA floor):
//! shared by the PEM reader, the strength rules and the key set, so none of them imports
//! another for its errors.

use jsonwebtoken::Algorithm;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A named curve. Only P-256, P-384 and Ed25519 are supported; others keep their name for the
/// error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    Ed25519,
    Other(String),
}

impl std::fmt::Display for Curve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::Ed25519 => "Ed25519",
            Curve::Other(name) => name,
        })
    }
}

/// The name of an algorithm as a token's `alg` header spells it.
pub(crate) fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// Why a key, or a set of keys, is refused. Conditions only: the caller adds which key it was
/// and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the RSA modulus has {bits} bits, fewer than the {MIN_RSA_BITS} required")]
    RsaKeyTooShort { bits: usize },
    #[error("the RSA modulus has the ROCA fingerprint (CVE-2017-15361)")]
    RocaVulnerable,
    #[error("the RSA public exponent must be odd and greater than 1")]
    RsaExponentInvalid,
    #[error("unsupported curve {curve}")]
    UnsupportedCurve { curve: Curve },
    #[error("a {curve} key does not fit {algorithm}")]
    CurveMismatch {
        curve: Curve,
        algorithm: &'static str,
    },
    #[error("not a {algorithm} key ({found})")]
    WrongKeyType {
        algorithm: &'static str,
        found: String,
    },
    #[error("the HMAC secret has {len} bytes, shorter than the {min} {algorithm} needs")]
    HmacSecretTooShort {
        len: usize,
        min: usize,
        algorithm: &'static str,
    },
    #[error("unsupported key type (algorithm identifier {oid})")]
    UnsupportedKeyType { oid: String },
    #[error("not a PEM document")]
    PemParse {
        #[source]
        source: ::pem::PemError,
    },
    #[error("the PEM block is {label:?}, not {expected}")]
    UnexpectedPemLabel {
        label: String,
        expected: &'static str,
    },
    #[error("malformed key encoding")]
    MalformedKey {
        #[source]
        source: spki::Error,
    },
    #[error("unusable key")]
    Unusable {
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("key {kid:?} is defined twice")]
    DuplicateKid { kid: String },
    #[error("signing key {kid:?} is not configured or has no private key")]
    NoSigningKey { kid: String },
    #[error("key {kid:?}: the private key does not belong to the public key")]
    KeyPairMismatch { kid: String },
    #[error("key {kid:?}: cannot sign")]
    Sign {
        kid: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

impl From<spki::Error> for KeyError {
    fn from(source: spki::Error) -> Self {
        KeyError::MalformedKey { source }
    }
}

impl From<spki::der::Error> for KeyError {
    fn from(source: spki::der::Error) -> Self {
        KeyError::MalformedKey {
            source: source.into(),
        }
    }
}
