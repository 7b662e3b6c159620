//! Key strength rules, one set for every key source (PEM file, JWK, HMAC secret): an RSA
//! modulus of at least 2048 bits without the ROCA fingerprint and with an odd exponent above 1,
//! the curve the algorithm names, an HMAC secret at least as long as the hash, and a key type
//! that fits the algorithm. A key that breaks one is refused when loaded, never used.

use jsonwebtoken::Algorithm;

use super::key_error::{algorithm_name, Curve, KeyError, MIN_RSA_BITS};

/// What the rules need to know about a key, whatever it was read from.
pub(crate) enum KeyShape<'a> {
    /// Big-endian modulus and exponent (leading zeros allowed).
    Rsa {
        modulus: &'a [u8],
        exponent: &'a [u8],
    },
    /// An elliptic-curve (ECDSA) key on `Curve`.
    Ec(Curve),
    /// An octet key pair (EdDSA) on `Curve`.
    Okp(Curve),
    /// An HMAC secret of `len` bytes.
    Secret { len: usize },
}

pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn is_rsa(alg: Algorithm) -> bool {
    matches!(
        alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
    )
}

/// Smallest HMAC secret accepted, in bytes: the hash size (RFC 7518 §3.2).
fn min_hmac_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// The curve `alg` signs on, for the ECDSA and EdDSA algorithms.
fn curve_of(alg: Algorithm) -> Option<Curve> {
    match alg {
        Algorithm::ES256 => Some(Curve::P256),
        Algorithm::ES384 => Some(Curve::P384),
        Algorithm::EdDSA => Some(Curve::Ed25519),
        _ => None,
    }
}

/// Refuses a key that may not be used for `algorithm`.
pub(crate) fn check(shape: &KeyShape<'_>, algorithm: Algorithm) -> Result<(), KeyError> {
    let wrong = |found: String| KeyError::WrongKeyType {
        algorithm: algorithm_name(algorithm),
        found,
    };
    match shape {
        KeyShape::Rsa { modulus, exponent } => {
            if !is_rsa(algorithm) {
                return Err(wrong("an RSA key".to_owned()));
            }
            check_rsa(modulus, exponent)
        }
        KeyShape::Ec(curve) | KeyShape::Okp(curve) => {
            let kind = match shape {
                KeyShape::Ec(_) => "EC",
                _ => "OKP",
            };
            if !matches!(curve, Curve::P256 | Curve::P384 | Curve::Ed25519) {
                return Err(KeyError::UnsupportedCurve {
                    curve: curve.clone(),
                });
            }
            let edwards = *curve == Curve::Ed25519;
            let found = || format!("an {kind} key on {curve}");
            if (kind == "OKP") != edwards {
                // An EC key on Ed25519, or an OKP key on a NIST curve: malformed.
                return Err(wrong(found()));
            }
            match curve_of(algorithm) {
                Some(wanted) if wanted == *curve => Ok(()),
                // Both NIST curves, but not the one the algorithm signs on.
                Some(wanted) if (wanted == Curve::Ed25519) == edwards => {
                    Err(KeyError::CurveMismatch {
                        curve: curve.clone(),
                        algorithm: algorithm_name(algorithm),
                    })
                }
                _ => Err(wrong(found())),
            }
        }
        KeyShape::Secret { len } => {
            if !is_hmac(algorithm) {
                return Err(wrong("an HMAC secret".to_owned()));
            }
            let min = min_hmac_secret(algorithm);
            if *len < min {
                return Err(KeyError::HmacSecretTooShort {
                    len: *len,
                    min,
                    algorithm: algorithm_name(algorithm),
                });
            }
            Ok(())
        }
    }
}

fn check_rsa(modulus: &[u8], exponent: &[u8]) -> Result<(), KeyError> {
    let n = strip_leading_zeros(modulus);
    let bits = n
        .first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaKeyTooShort { bits });
    }
    if roca_fingerprint(n) {
        return Err(KeyError::RocaVulnerable);
    }
    let e = strip_leading_zeros(exponent);
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.len() > 8 || !odd || e == [1] {
        return Err(KeyError::RsaExponentInvalid);
    }
    Ok(())
}

fn strip_leading_zeros(n: &[u8]) -> &[u8] {
    let start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    &n[start..]
}

/// Small primes of the ROCA fingerprint (CVE-2017-15361, "Return of Coppersmith's Attack").
const ROCA_PRIMES: [u64; 38] = [
    3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
];

/// True for a modulus from the vulnerable Infineon generator: modulo each of the small primes
/// it is a power of 65537, which a random modulus almost never is for all of them.
fn roca_fingerprint(n: &[u8]) -> bool {
    ROCA_PRIMES.iter().all(|&p| {
        let residue = n
            .iter()
            .fold(0u64, |acc, b| (acc * 256 + u64::from(*b)) % p);
        let generator = 65537 % p;
        let mut power = 1;
        loop {
            if power == residue {
                return true;
            }
            power = power * generator % p;
            if power == 1 {
                return false;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modulus(bits: usize) -> Vec<u8> {
        // 0b1000…0001: the top bit set (so it has `bits` bits) and odd.
        let mut n = vec![0u8; bits.div_ceil(8)];
        n[0] = 1 << ((bits - 1) % 8);
        if let Some(last) = n.last_mut() {
            *last |= 1;
        }
        n
    }

    #[test]
    fn rsa_modulus_bits_are_counted_exactly() {
        let e = [1, 0, 1];
        for (bits, ok) in [(1024, false), (2047, false), (2048, true), (4096, true)] {
            let n = modulus(bits);
            let got = check(
                &KeyShape::Rsa {
                    modulus: &n,
                    exponent: &e,
                },
                Algorithm::RS256,
            );
            match got {
                Ok(()) => assert!(ok, "{bits} bits accepted"),
                Err(KeyError::RsaKeyTooShort { bits: b }) => {
                    assert!(!ok, "{bits} bits refused");
                    assert_eq!(b, bits);
                }
                Err(other) => panic!("{bits}: {other}"),
            }
        }
        // Leading zero bytes (a DER INTEGER's sign byte) do not count.
        let mut padded = vec![0, 0];
        padded.extend(modulus(2048));
        assert!(check(
            &KeyShape::Rsa {
                modulus: &padded,
                exponent: &e
            },
            Algorithm::PS256
        )
        .is_ok());
    }

    #[test]
    fn rsa_exponent_must_be_odd_and_above_one() {
        let n = modulus(2048);
        for (e, ok) in [
            (&[1u8, 0, 1][..], true),
            (&[3], true),
            (&[1], false),
            (&[0, 1], false),
            (&[2], false),
            (&[], false),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 1], false),
        ] {
            let got = check(
                &KeyShape::Rsa {
                    modulus: &n,
                    exponent: e,
                },
                Algorithm::RS256,
            );
            assert_eq!(got.is_ok(), ok, "e = {e:?}: {got:?}");
        }
    }

    #[test]
    fn curves_must_match_the_algorithm() {
        use Algorithm::*;
        let cases: Vec<(KeyShape<'_>, Algorithm, Result<(), &str>)> = vec![
            (KeyShape::Ec(Curve::P256), ES256, Ok(())),
            (KeyShape::Ec(Curve::P384), ES384, Ok(())),
            (KeyShape::Okp(Curve::Ed25519), EdDSA, Ok(())),
            (
                KeyShape::Ec(Curve::P384),
                ES256,
                Err("a P-384 key does not fit ES256"),
            ),
            (
                KeyShape::Ec(Curve::P256),
                ES384,
                Err("a P-256 key does not fit ES384"),
            ),
            (
                KeyShape::Ec(Curve::P256),
                EdDSA,
                Err("not a EdDSA key (an EC key on P-256)"),
            ),
            (KeyShape::Okp(Curve::Ed25519), ES256, Err("not a ES256 key")),
            (
                KeyShape::Ec(Curve::Ed25519),
                EdDSA,
                Err("not a EdDSA key (an EC key on"),
            ),
            (KeyShape::Ec(Curve::P256), RS256, Err("not a RS256 key")),
            (
                KeyShape::Ec(Curve::Other("P-521".to_owned())),
                ES256,
                Err("unsupported curve P-521"),
            ),
            (
                KeyShape::Secret { len: 64 },
                ES256,
                Err("not a ES256 key (an HMAC secret)"),
            ),
            (KeyShape::Secret { len: 32 }, HS256, Ok(())),
            (
                KeyShape::Secret { len: 47 },
                HS384,
                Err("shorter than the 48 HS384 needs"),
            ),
            (
                KeyShape::Secret { len: 63 },
                HS512,
                Err("shorter than the 64"),
            ),
        ];
        for (shape, alg, expected) in cases {
            let got = check(&shape, alg).map_err(|e| e.to_string());
            match (got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{alg:?}: {got}"),
                (got, want) => panic!("{alg:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
