//! The edge between configuration and identity: reads the key files, JWKS file and secrets a
//! `JwtConfig` names (secrets from the injected `env`), and hands their bytes to identity's
//! constructors, which apply one set of strength rules to every source. Also turns the config
//! sections into identity's own settings. Nothing is read anywhere else.

use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;

use crate::config::{ApiTokenConfig, JwtAlgorithm, JwtConfig, KeyConfig};
use crate::identity::jwk::{self, JwkSetError};
use crate::identity::{
    ApiTokenSettings, ClaimRules, JwtSettings, KeyError, KeySet, SigningKey, VerifyingKey,
};

/// Why the configured keys could not be loaded. Every variant is a configuration error.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key {kid:?}: cannot read {}", path.display())]
    Read {
        kid: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key {kid:?}: environment variable {var} is not set")]
    SecretEnvUnset { kid: String, var: String },
    #[error("key {kid:?}: set exactly one of secret_env and secret_file")]
    SecretSourceAmbiguous { kid: String },
    #[error("key {kid:?}: HMAC keys take secret_env or secret_file, not PEM files")]
    PemForHmac { kid: String },
    #[error("key {kid:?}: {algorithm} keys take public_key_file, not a secret")]
    SecretForAsymmetric {
        kid: String,
        algorithm: JwtAlgorithm,
    },
    #[error("key {kid:?}: public_key_file is required")]
    MissingPublicKey { kid: String },
    /// The material was read but refused; `origin` says where it came from.
    #[error("key {kid:?} ({origin})")]
    Refused {
        kid: String,
        origin: String,
        #[source]
        source: KeyError,
    },
    #[error("cannot read jwks file {}", path.display())]
    ReadJwks {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("jwks file {}", path.display())]
    Jwks {
        path: PathBuf,
        #[source]
        source: JwkSetError,
    },
    #[error(transparent)]
    KeySet(#[from] KeyError),
}

/// Loads every configured key and the JWKS file; `env` resolves `secret_env`.
pub fn load(
    config: &JwtConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KeySet, KeyringError> {
    let mut keys = Vec::new();
    let mut signing = None;
    for kc in &config.keys {
        let (verifying, signer) = load_key(kc, &env)?;
        if config.signing_key.as_deref() == Some(kc.kid.as_str()) {
            signing = signer;
        }
        keys.push(verifying);
    }
    if let Some(path) = &config.jwks_file {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::ReadJwks {
            path: path.clone(),
            source,
        })?;
        let set = jwk::parse_jwks(&text).map_err(|source| KeyringError::Jwks {
            path: path.clone(),
            source,
        })?;
        keys.extend(set);
    }
    let missing_signer = signing.is_none();
    let set = KeySet::new(keys, signing)?;
    match &config.signing_key {
        Some(kid) if missing_signer => Err(KeyError::NoSigningKey { kid: kid.clone() }.into()),
        _ => Ok(set),
    }
}

/// The one jsonwebtoken algorithm a configured key is for.
pub fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Hs384 => Algorithm::HS384,
        JwtAlgorithm::Hs512 => Algorithm::HS512,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Rs384 => Algorithm::RS384,
        JwtAlgorithm::Rs512 => Algorithm::RS512,
        JwtAlgorithm::Ps256 => Algorithm::PS256,
        JwtAlgorithm::Ps384 => Algorithm::PS384,
        JwtAlgorithm::Ps512 => Algorithm::PS512,
        JwtAlgorithm::Es256 => Algorithm::ES256,
        JwtAlgorithm::Es384 => Algorithm::ES384,
        JwtAlgorithm::EdDsa => Algorithm::EdDSA,
    }
}

fn is_hmac(alg: JwtAlgorithm) -> bool {
    matches!(
        alg,
        JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512
    )
}

fn read(kid: &str, path: &Path) -> Result<Vec<u8>, KeyringError> {
    std::fs::read(path).map_err(|source| KeyringError::Read {
        kid: kid.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn load_key(
    kc: &KeyConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(VerifyingKey, Option<SigningKey>), KeyringError> {
    let kid = kc.kid.as_str();
    let alg = algorithm(kc.algorithm);
    let refused = |origin: String| {
        move |source| KeyringError::Refused {
            kid: kid.to_owned(),
            origin,
            source,
        }
    };
    if is_hmac(kc.algorithm) {
        if kc.public_key_file.is_some() || kc.private_key_file.is_some() {
            return Err(KeyringError::PemForHmac {
                kid: kid.to_owned(),
            });
        }
        let (secret, origin) = match (&kc.secret_env, &kc.secret_file) {
            (Some(var), None) => {
                let secret = env(var).ok_or_else(|| KeyringError::SecretEnvUnset {
                    kid: kid.to_owned(),
                    var: var.clone(),
                })?;
                (secret.into_bytes(), format!("secret_env {var}"))
            }
            (None, Some(path)) => {
                let mut bytes = read(kid, path)?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                (bytes, path.display().to_string())
            }
            _ => {
                return Err(KeyringError::SecretSourceAmbiguous {
                    kid: kid.to_owned(),
                })
            }
        };
        let verifying = VerifyingKey::hmac(kid, alg, &secret).map_err(refused(origin.clone()))?;
        let signing = SigningKey::hmac(kid, alg, &secret).map_err(refused(origin))?;
        return Ok((verifying, Some(signing)));
    }
    if kc.secret_env.is_some() || kc.secret_file.is_some() {
        return Err(KeyringError::SecretForAsymmetric {
            kid: kid.to_owned(),
            algorithm: kc.algorithm,
        });
    }
    let public_path =
        kc.public_key_file
            .as_ref()
            .ok_or_else(|| KeyringError::MissingPublicKey {
                kid: kid.to_owned(),
            })?;
    let verifying = VerifyingKey::from_pem(kid, alg, &read(kid, public_path)?)
        .map_err(refused(public_path.display().to_string()))?;
    let signing = match &kc.private_key_file {
        None => None,
        Some(path) => Some(
            SigningKey::from_pem(kid, alg, &read(kid, path)?)
                .map_err(refused(path.display().to_string()))?,
        ),
    };
    Ok((verifying, signing))
}

impl From<&JwtConfig> for JwtSettings {
    fn from(config: &JwtConfig) -> Self {
        JwtSettings {
            rules: ClaimRules {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway: config.leeway,
            },
            cookie_name: config.cookie_name.clone(),
            cache_ttl: config.cache_ttl,
            cache_capacity: config.cache_capacity,
        }
    }
}

impl From<&ApiTokenConfig> for ApiTokenSettings {
    fn from(config: &ApiTokenConfig) -> Self {
        ApiTokenSettings {
            header: config.header.clone(),
            cache_ttl: config.cache_ttl,
        }
    }
}

#[cfg(test)]
mod tests;
