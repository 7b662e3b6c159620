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

mod login;

pub use login::{load_login, login_verifying_keys, LoginKeyringError, LoginMaterial};

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
    /// The in-process filter's bundle carries public keys only.
    #[error("key {kid:?} is a shared secret: the in-process bundle never carries one")]
    SecretNotShipped { kid: String },
    #[error(
        "keys fetched from a URL (jwt.jwks_url, jwt.issuers) are not in the in-process bundle"
    )]
    RemoteKeysNotShipped,
    #[error("jwks file {}", path.display())]
    Jwks {
        path: PathBuf,
        #[source]
        source: JwkSetError,
    },
    #[error(transparent)]
    KeySet(#[from] KeyError),
    #[error("server.admin_token_file: cannot read {}", path.display())]
    ReadAdminToken {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.admin_token_file: {} must hold at least {MIN_ADMIN_TOKEN_LEN} characters (no line breaks inside)", path.display())]
    WeakAdminToken { path: PathBuf },
}

/// The shortest admin bearer token accepted (e.g. `openssl rand -hex 32` gives 64).
pub const MIN_ADMIN_TOKEN_LEN: usize = 24;

/// The admin endpoint's bearer token, from `server.admin_token_file` (trailing whitespace
/// ignored), when one is configured. Never printed: it stays in a `Secret`.
pub fn load_admin_token(
    server: &crate::config::ServerConfig,
) -> Result<Option<crate::config::Secret<String>>, KeyringError> {
    let Some(path) = &server.admin_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyringError::ReadAdminToken {
        path: path.clone(),
        source,
    })?;
    let token = text.trim_end();
    if token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(|c| c.is_control()) {
        return Err(KeyringError::WeakAdminToken { path: path.clone() });
    }
    Ok(Some(crate::config::Secret::new(token.to_owned())))
}

/// Loads every configured key and the JWKS file; `env` resolves `secret_env`.
pub fn load(
    config: &JwtConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KeySet, KeyringError> {
    load_with(config, Vec::new(), env)
}

/// Like `load`, with more verifying keys (portcullis's own login keys, so Check accepts the
/// tokens it mints).
pub fn load_with(
    config: &JwtConfig,
    extra: Vec<VerifyingKey>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<KeySet, KeyringError> {
    let mut keys = extra;
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

/// The public members a bundle's JWK may carry; anything else (a private `d`, `p`, `q`...)
/// is left out even if a JWKS file held it.
const PUBLIC_JWK_MEMBERS: [&str; 9] = ["kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"];

/// The configured verification keys as a JWKS document of public keys, for the in-process
/// filter's bundle: each PEM key under its configured `kid` and algorithm, and the JWKS file's
/// keys. A shared HMAC secret or keys fetched from a URL make no bundle (an error, not an
/// omission: the filter would otherwise refuse tokens the sidecar accepts).
pub fn public_jwks(config: &JwtConfig) -> Result<serde_json::Value, KeyringError> {
    if config.jwks_url.is_some() || !config.issuers.is_empty() {
        return Err(KeyringError::RemoteKeysNotShipped);
    }
    let mut keys = Vec::new();
    for kc in &config.keys {
        let kid = kc.kid.as_str();
        if is_hmac(kc.algorithm) {
            return Err(KeyringError::SecretNotShipped {
                kid: kid.to_owned(),
            });
        }
        let path = kc
            .public_key_file
            .as_ref()
            .ok_or_else(|| KeyringError::MissingPublicKey {
                kid: kid.to_owned(),
            })?;
        let alg = algorithm(kc.algorithm);
        let published =
            crate::identity::publish::publish(alg, &read(kid, path)?).map_err(|source| {
                KeyringError::Refused {
                    kid: kid.to_owned(),
                    origin: path.display().to_string(),
                    source,
                }
            })?;
        let mut jwk = published.jwk;
        jwk["kid"] = kid.into();
        jwk["alg"] = serde_json::to_value(alg).unwrap_or_default();
        keys.push(jwk);
    }
    if let Some(path) = &config.jwks_file {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::ReadJwks {
            path: path.clone(),
            source,
        })?;
        jwk::parse_jwks(&text).map_err(|source| KeyringError::Jwks {
            path: path.clone(),
            source,
        })?;
        let set: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for key in set["keys"].as_array().into_iter().flatten() {
            let public: serde_json::Map<String, serde_json::Value> = PUBLIC_JWK_MEMBERS
                .iter()
                .filter_map(|m| key.get(*m).map(|v| ((*m).to_owned(), v.clone())))
                .collect();
            keys.push(public.into());
        }
    }
    Ok(serde_json::json!({ "keys": keys }))
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
