//! JWT verification against configured keys only. The key is chosen by `kid` from an in-memory
//! map and the algorithm comes from the key, never from the token: `alg: none`, HS/RS confusion
//! and embedded `jwk`/`jku`/`x5u`/`x5c` headers are refused before any signature check.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{JwtConfig, KeyConfig};

/// Longest token accepted; longer ones are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid:?}: unsupported algorithm {algorithm:?}")]
    UnsupportedAlgorithm { kid: String, algorithm: String },
    #[error("key {kid:?}: {problem}")]
    Material { kid: String, problem: String },
    #[error("key {kid:?}: cannot read {path}")]
    Read {
        kid: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key {kid:?} is defined twice")]
    DuplicateKid { kid: String },
    #[error("jwks file {path}: {problem}")]
    Jwks { path: String, problem: String },
    #[error("signing key {kid:?} is not configured or has no private key")]
    NoSigningKey { kid: String },
}

/// Why a token was refused. All of these are a 401 `invalid_token` to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header is malformed")]
    MalformedHeader,
    #[error("token algorithm is none")]
    AlgNone,
    #[error("token header embeds key material ({0})")]
    EmbeddedKey(&'static str),
    #[error("token header has critical extensions")]
    CriticalHeader,
    #[error("token has no kid and several keys are configured")]
    MissingKid,
    #[error("token kid is not a configured key")]
    UnknownKid,
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token claims are malformed")]
    MalformedClaims,
    #[error("token has no exp")]
    MissingExp,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token has no or a wrong issuer")]
    WrongIssuer,
    #[error("token has no or a wrong audience")]
    WrongAudience,
    #[error("token has no subject")]
    MissingSubject,
    #[error("api token is malformed: {0}")]
    MalformedApiToken(super::api_token::FormatError),
    #[error("api token is not known")]
    UnknownApiToken,
    #[error("api token has been revoked")]
    RevokedApiToken,
    #[error("api token has expired")]
    ExpiredApiToken,
    #[error("the token's owner is disabled")]
    DisabledOwner,
}

/// A public (or HMAC) key tokens may be verified with, and the one algorithm it is for.
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

/// The configured keys, by `kid`, and the optional signing key for `jwt mint`.
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    signing: Option<SigningKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.values().collect::<Vec<_>>())
            .field("signing", &self.signing.as_ref().map(|s| &s.kid))
            .finish()
    }
}

pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn algorithm_name(alg: Algorithm) -> &'static str {
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

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Smallest HMAC secret accepted, in bytes: the hash size (RFC 7518 §3.2).
fn min_hmac_secret(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
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
/// Smallest RSA modulus accepted from a JWK, in bytes (2048 bits).
const MIN_RSA_MODULUS: usize = 256;

impl KeySet {
    /// Loads every configured key; `env` resolves `secret_env`.
    pub fn from_config(
        config: &JwtConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        let mut signing = None;
        for kc in &config.keys {
            let (verifying, signer) = load_key(kc, &env)?;
            if config.signing_key.as_deref() == Some(kc.kid.as_str()) {
                signing = signer;
            }
            if keys.insert(kc.kid.clone(), verifying).is_some() {
                return Err(KeyError::DuplicateKid {
                    kid: kc.kid.clone(),
                });
            }
        }
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| KeyError::Jwks {
                path: path.display().to_string(),
                problem: e.to_string(),
            })?;
            for key in Self::parse_jwks(&text).map_err(|problem| KeyError::Jwks {
                path: path.display().to_string(),
                problem,
            })? {
                let kid = key.kid.clone();
                if keys.insert(kid.clone(), key).is_some() {
                    return Err(KeyError::DuplicateKid { kid });
                }
            }
        }
        if let Some(kid) = &config.signing_key {
            if signing.is_none() {
                return Err(KeyError::NoSigningKey { kid: kid.clone() });
            }
        }
        Ok(KeySet { keys, signing })
    }

    /// Public keys from a JWKS document. Symmetric (`oct`) keys are refused here: a shared
    /// secret belongs in `secret_env`/`secret_file`, not in a key set that may be published.
    pub fn parse_jwks(text: &str) -> Result<Vec<VerifyingKey>, String> {
        Self::parse_jwk_set(text, false)
    }

    /// Keys from a JWK set. The whole set is refused when any key is, when two keys share a
    /// `kid`, or when it mixes symmetric and asymmetric keys (which would be read ambiguously).
    pub fn parse_jwk_set(text: &str, allow_symmetric: bool) -> Result<Vec<VerifyingKey>, String> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let symmetric = |jwk: &Jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
        let symmetric_count = set.keys.iter().filter(|k| symmetric(k)).count();
        if symmetric_count > 0 && !allow_symmetric {
            return Err("symmetric keys are not accepted in a JWKS file".to_owned());
        }
        if symmetric_count > 0 && symmetric_count < set.keys.len() {
            return Err("the set mixes symmetric and asymmetric keys".to_owned());
        }
        let mut out: Vec<VerifyingKey> = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let key = VerifyingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
            if out.iter().any(|k| k.kid == key.kid) {
                return Err(format!("key {i}: kid {:?} is used twice", key.kid));
            }
            out.push(key);
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Builds a key set from keys already loaded (tests, JWKS).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        KeySet {
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
            signing: None,
        }
    }

    /// Checks a compact JWS and returns its verified, decoded payload.
    pub fn verify_signature(&self, token: &str) -> Result<(Vec<u8>, &VerifyingKey), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::MalformedHeader)?;
        // Strict base64url for every part: no padding, whitespace or stray bits.
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::MalformedHeader)?;
        for (present, name) in [
            (header.jwk.is_some(), "jwk"),
            (header.jku.is_some(), "jku"),
            (header.x5u.is_some(), "x5u"),
            (header.x5c.is_some(), "x5c"),
        ] {
            if present {
                return Err(TokenError::EmbeddedKey(name));
            }
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self.keys.get(kid).ok_or(TokenError::UnknownKid)?,
            None if self.keys.len() == 1 => {
                self.keys.values().next().ok_or(TokenError::UnknownKid)?
            }
            None => return Err(TokenError::MissingKid),
        };
        if header.alg != algorithm_name(key.algorithm) {
            return Err(TokenError::AlgorithmMismatch);
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature_b64,
            signed.as_bytes(),
            &key.key,
            key.algorithm,
        ) {
            Ok(true) => Ok((payload, key)),
            _ => Err(TokenError::BadSignature),
        }
    }

    /// Signs `claims` with the configured signing key.
    pub fn mint<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let signer = self
            .signing
            .as_ref()
            .ok_or_else(|| KeyError::NoSigningKey { kid: String::new() })?;
        let mut header = jsonwebtoken::Header::new(signer.algorithm);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key).map_err(|e| KeyError::Material {
            kid: signer.kid.clone(),
            problem: format!("cannot sign: {e}"),
        })
    }
}

/// The header fields we read; `deny_unknown_fields` is not used, extra fields are harmless.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl VerifyingKey {
    /// A key from a JWK: its `alg` (or the one its type implies) is the only algorithm it
    /// verifies; the curve must fit the algorithm; encryption-only keys are refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, String> {
        let kid = jwk.common.key_id.clone().ok_or("no kid")?;
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            return Err(format!("key {kid:?} is not for signatures"));
        }
        if let Some(ops) = &jwk.common.key_operations {
            let symmetric = matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
            let verifies = ops.iter().any(|op| {
                matches!(op, KeyOperations::Verify)
                    || (symmetric && matches!(op, KeyOperations::Sign))
            });
            if !verifies {
                return Err(format!("key {kid:?}: key_ops do not include verify"));
            }
        }
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(alg), _) => key_algorithm(*alg)
                .ok_or_else(|| format!("key {kid:?}: unsupported alg {alg:?}"))?,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P384 => {
                Algorithm::ES384
            }
            (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            (None, _) => return Err(format!("key {kid:?} has no alg")),
        };
        let fits = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let n = URL_SAFE_NO_PAD
                    .decode(&p.n)
                    .map_err(|_| format!("key {kid:?}: bad modulus"))?;
                let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
                if n.len() < MIN_RSA_MODULUS {
                    return Err(format!("key {kid:?}: RSA modulus shorter than 2048 bits"));
                }
                if roca_fingerprint(&n) {
                    return Err(format!(
                        "key {kid:?}: RSA modulus has the ROCA fingerprint (CVE-2017-15361)"
                    ));
                }
                let e = URL_SAFE_NO_PAD
                    .decode(&p.e)
                    .map_err(|_| format!("key {kid:?}: bad exponent"))?;
                let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
                let odd = e.last().is_some_and(|b| b & 1 == 1);
                if e.len() > 8 || !odd || e == [1] {
                    return Err(format!(
                        "key {kid:?}: RSA public exponent must be odd and greater than 1"
                    ));
                }
                matches!(
                    algorithm,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
            }
            AlgorithmParameters::EllipticCurve(p) => {
                (p.curve == EllipticCurve::P256 && algorithm == Algorithm::ES256)
                    || (p.curve == EllipticCurve::P384 && algorithm == Algorithm::ES384)
            }
            AlgorithmParameters::OctetKeyPair(p) => {
                p.curve == EllipticCurve::Ed25519 && algorithm == Algorithm::EdDSA
            }
            AlgorithmParameters::OctetKey(p) => {
                let len = URL_SAFE_NO_PAD
                    .decode(&p.value)
                    .map_err(|_| format!("key {kid:?}: bad secret"))?
                    .len();
                if len < min_hmac_secret(algorithm) {
                    return Err(format!(
                        "key {kid:?}: HMAC secret shorter than {} bytes",
                        min_hmac_secret(algorithm)
                    ));
                }
                is_hmac(algorithm)
            }
            _ => false,
        };
        if !fits {
            return Err(format!(
                "key {kid:?}: key type does not fit {}",
                algorithm_name(algorithm)
            ));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        Ok(VerifyingKey {
            kid,
            algorithm,
            key,
        })
    }

    /// An HMAC key from raw secret bytes.
    pub fn hmac(kid: &str, algorithm: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        if !is_hmac(algorithm) {
            return Err(KeyError::Material {
                kid: kid.to_owned(),
                problem: "not an HMAC algorithm".to_owned(),
            });
        }
        if secret.len() < min_hmac_secret(algorithm) {
            return Err(KeyError::Material {
                kid: kid.to_owned(),
                problem: format!(
                    "HMAC secret shorter than {} bytes",
                    min_hmac_secret(algorithm)
                ),
            });
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| KeyError::Material {
            kid: kid.to_owned(),
            problem: e.to_string(),
        })?;
        Ok(VerifyingKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        })
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

fn read(kid: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        kid: kid.to_owned(),
        path: path.display().to_string(),
        source,
    })
}

fn load_key(
    kc: &KeyConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(VerifyingKey, Option<SigningKey>), KeyError> {
    let kid = kc.kid.as_str();
    let material = |problem: String| KeyError::Material {
        kid: kid.to_owned(),
        problem,
    };
    let algorithm =
        parse_algorithm(&kc.algorithm).ok_or_else(|| KeyError::UnsupportedAlgorithm {
            kid: kid.to_owned(),
            algorithm: kc.algorithm.clone(),
        })?;
    if is_hmac(algorithm) {
        if kc.public_key_file.is_some() || kc.private_key_file.is_some() {
            return Err(material(
                "HMAC keys take secret_env or secret_file, not PEM files".to_owned(),
            ));
        }
        let secret: Vec<u8> = match (&kc.secret_env, &kc.secret_file) {
            (Some(var), None) => env(var)
                .ok_or_else(|| material(format!("environment variable {var} is not set")))?
                .into_bytes(),
            (None, Some(path)) => {
                let mut bytes = read(kid, path)?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
            _ => {
                return Err(material(
                    "set exactly one of secret_env and secret_file".to_owned(),
                ))
            }
        };
        let verifying = VerifyingKey::hmac(kid, algorithm, &secret)?;
        let key = EncodingKey::from_secret(&secret).map_err(|e| material(e.to_string()))?;
        let signing = SigningKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        };
        return Ok((verifying, Some(signing)));
    }
    if kc.secret_env.is_some() || kc.secret_file.is_some() {
        return Err(material(format!(
            "{} keys take public_key_file, not a secret",
            kc.algorithm
        )));
    }
    let public_path = kc
        .public_key_file
        .as_ref()
        .ok_or_else(|| material("public_key_file is required".to_owned()))?;
    let pem = read(kid, public_path)?;
    let key = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        _ => DecodingKey::from_rsa_pem(&pem),
    }
    .map_err(|e| {
        material(format!(
            "{} is not a {} public key: {e}",
            public_path.display(),
            kc.algorithm
        ))
    })?;
    let signing = match &kc.private_key_file {
        None => None,
        Some(path) => {
            let pem = read(kid, path)?;
            let key = match algorithm {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                _ => EncodingKey::from_rsa_pem(&pem),
            }
            .map_err(|e| {
                material(format!(
                    "{} is not a {} private key: {e}",
                    path.display(),
                    kc.algorithm
                ))
            })?;
            Some(SigningKey {
                kid: kid.to_owned(),
                algorithm,
                key,
            })
        }
    };
    Ok((
        VerifyingKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        },
        signing,
    ))
}

/// A JSON number of seconds; strings, booleans and nulls are refused rather than ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumericDate(pub f64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        n.as_f64()
            .filter(|f| f.is_finite())
            .map(NumericDate)
            .ok_or_else(|| serde::de::Error::custom("not a finite number"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims portcullis reads. A claim of the wrong type makes the whole token invalid.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub exp: Option<NumericDate>,
    #[serde(default)]
    pub nbf: Option<NumericDate>,
    #[serde(default)]
    pub iat: Option<NumericDate>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub jti: Option<String>,
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
}

impl ClaimRules {
    pub fn from_config(config: &JwtConfig) -> Self {
        ClaimRules {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
        }
    }

    /// Parses and checks the claims of a verified payload at time `now` (unix seconds).
    pub fn check(&self, payload: &[u8], now: f64) -> Result<Claims, TokenError> {
        let claims: Claims =
            serde_json::from_slice(payload).map_err(|_| TokenError::MalformedClaims)?;
        let leeway = self.leeway.as_secs_f64();
        let exp = claims.exp.ok_or(TokenError::MissingExp)?;
        if now > exp.0 + leeway {
            return Err(TokenError::Expired);
        }
        if let Some(iat) = claims.iat {
            // Issued in the future: clock trouble at the issuer, and it would outlive a
            // "revoke every token issued until now".
            if iat.0 > now + leeway {
                return Err(TokenError::IssuedInFuture);
            }
        }
        if let Some(nbf) = claims.nbf {
            if now + leeway < nbf.0 {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        if !self.audience.is_empty() {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => self.audience.contains(a),
                Some(Audience::Many(list)) => list.iter().any(|a| self.audience.contains(a)),
                None => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        match &claims.sub {
            Some(s) if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) => {}
            _ => return Err(TokenError::MissingSubject),
        }
        Ok(claims)
    }
}
