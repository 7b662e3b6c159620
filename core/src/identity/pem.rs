//! PEM documents, as bytes, into typed key material: SPKI (`PUBLIC KEY`) and PKCS#1 (`RSA
//! PUBLIC KEY`) public keys, PKCS#8 (`PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`) private keys.
//! Parsing only, with the RustCrypto DER types: `strength` judges the shape, and `keys` builds
//! the jsonwebtoken key from the same bytes, so the key checked is the key used.

use pkcs1::{RsaPrivateKeyRef, RsaPublicKeyRef};
use pkcs8::PrivateKeyInfoRef;
use spki::der::asn1::ObjectIdentifier;
use spki::der::Decode as _;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::key_error::{Curve, KeyError};
use super::strength::KeyShape;

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");

/// A named curve by OID: the supported ones, and a few others so a refusal can name them.
fn curve(oid: ObjectIdentifier) -> Curve {
    let dotted = oid.to_string();
    let other = |name: &str| Curve::Other(name.to_owned());
    match dotted.as_str() {
        "1.2.840.10045.3.1.7" => Curve::P256,
        "1.3.132.0.34" => Curve::P384,
        "1.3.132.0.35" => other("P-521"),
        "1.3.132.0.10" => other("secp256k1"),
        _ => Curve::Other(format!("with OID {dotted}")),
    }
}

/// A public key, with the bytes jsonwebtoken verifies with.
pub(crate) enum PublicKey {
    /// `pkcs1` is the PKCS#1 `RSAPublicKey` DER.
    Rsa {
        pkcs1: Vec<u8>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// `point` is the SEC1 encoded point.
    Ec { curve: Curve, point: Vec<u8> },
    /// `raw` is the 32-byte public key.
    Ed25519 { raw: Vec<u8> },
}

/// A private key, with the bytes jsonwebtoken signs with.
pub(crate) enum PrivateKey {
    /// `pkcs1` is the PKCS#1 `RSAPrivateKey` DER.
    Rsa {
        pkcs1: Vec<u8>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// `pkcs8` is the whole PKCS#8 document.
    Ec { curve: Curve, pkcs8: Vec<u8> },
    /// `pkcs8` is the whole PKCS#8 document.
    Ed25519 { pkcs8: Vec<u8> },
}

impl PublicKey {
    pub(crate) fn shape(&self) -> KeyShape<'_> {
        match self {
            PublicKey::Rsa {
                modulus, exponent, ..
            } => KeyShape::Rsa { modulus, exponent },
            PublicKey::Ec { curve, .. } => KeyShape::Ec(curve.clone()),
            PublicKey::Ed25519 { .. } => KeyShape::Okp(Curve::Ed25519),
        }
    }
}

impl PrivateKey {
    pub(crate) fn shape(&self) -> KeyShape<'_> {
        match self {
            PrivateKey::Rsa {
                modulus, exponent, ..
            } => KeyShape::Rsa { modulus, exponent },
            PrivateKey::Ec { curve, .. } => KeyShape::Ec(curve.clone()),
            PrivateKey::Ed25519 { .. } => KeyShape::Okp(Curve::Ed25519),
        }
    }
}

/// The first PEM block of `pem`: its label and DER contents.
fn block(pem: &[u8]) -> Result<::pem::Pem, KeyError> {
    ::pem::parse(pem).map_err(|source| KeyError::PemParse { source })
}

fn unsupported(algorithm: &AlgorithmIdentifierRef<'_>) -> KeyError {
    match algorithm.oid {
        ED448 => KeyError::UnsupportedCurve {
            curve: Curve::Other("Ed448".to_owned()),
        },
        oid => KeyError::UnsupportedKeyType {
            oid: oid.to_string(),
        },
    }
}

/// The public key in a `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) PEM document.
pub(crate) fn public_key(pem: &[u8]) -> Result<PublicKey, KeyError> {
    let block = block(pem)?;
    match block.tag() {
        "RSA PUBLIC KEY" => rsa_public(block.contents()),
        "PUBLIC KEY" => {
            let spki = SubjectPublicKeyInfoRef::from_der(block.contents())?;
            let key = spki.subject_public_key.raw_bytes();
            match spki.algorithm.oid {
                RSA_ENCRYPTION => rsa_public(key),
                EC_PUBLIC_KEY => Ok(PublicKey::Ec {
                    curve: curve(spki.algorithm.parameters_oid()?),
                    point: key.to_vec(),
                }),
                ED25519 => Ok(PublicKey::Ed25519 { raw: key.to_vec() }),
                _ => Err(unsupported(&spki.algorithm)),
            }
        }
        label => Err(KeyError::UnexpectedPemLabel {
            label: label.to_owned(),
            expected: "PUBLIC KEY or RSA PUBLIC KEY",
        }),
    }
}

fn rsa_public(pkcs1: &[u8]) -> Result<PublicKey, KeyError> {
    let key = RsaPublicKeyRef::from_der(pkcs1)?;
    Ok(PublicKey::Rsa {
        pkcs1: pkcs1.to_vec(),
        modulus: key.modulus.as_bytes().to_vec(),
        exponent: key.public_exponent.as_bytes().to_vec(),
    })
}

/// The private key in a `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) PEM document.
pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKey, KeyError> {
    let block = block(pem)?;
    match block.tag() {
        "RSA PRIVATE KEY" => rsa_private(block.contents()),
        "PRIVATE KEY" => {
            let info = PrivateKeyInfoRef::from_der(block.contents())?;
            match info.algorithm.oid {
                RSA_ENCRYPTION => rsa_private(info.private_key.as_bytes()),
                EC_PUBLIC_KEY => Ok(PrivateKey::Ec {
                    curve: curve(info.algorithm.parameters_oid()?),
                    pkcs8: block.contents().to_vec(),
                }),
                ED25519 => Ok(PrivateKey::Ed25519 {
                    pkcs8: block.contents().to_vec(),
                }),
                _ => Err(unsupported(&info.algorithm)),
            }
        }
        label => Err(KeyError::UnexpectedPemLabel {
            label: label.to_owned(),
            expected: "PRIVATE KEY or RSA PRIVATE KEY",
        }),
    }
}

fn rsa_private(pkcs1: &[u8]) -> Result<PrivateKey, KeyError> {
    let key = RsaPrivateKeyRef::from_der(pkcs1)?;
    Ok(PrivateKey::Rsa {
        pkcs1: pkcs1.to_vec(),
        modulus: key.modulus.as_bytes().to_vec(),
        exponent: key.public_exponent.as_bytes().to_vec(),
    })
}
