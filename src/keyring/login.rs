//! Sign-in's key material: the login issuer's signing and verifying keys, the OpenID client
//! secret and the state secret, read from the files and environment `LoginConfig` names.

use std::path::{Path, PathBuf};

use super::algorithm;
use crate::config::LoginConfig;
use crate::identity::{IssuerKeyMaterial, IssuerKeys, KeyError, VerifyingKey};

/// What sign-in needs from files and the environment.
pub struct LoginMaterial {
    pub keys: IssuerKeys,
    pub client_secret: String,
    pub state_secret: Vec<u8>,
}

impl std::fmt::Debug for LoginMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginMaterial")
            .field("keys", &self.keys)
            .field("client_secret", &"**redacted**")
            .field("state_secret", &"**redacted**")
            .finish()
    }
}

/// Why the login keys or secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoginKeyringError {
    #[error("login.signing_keys[{index}]: cannot read {}", path.display())]
    Read {
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("login.signing_keys")]
    Refused(#[source] KeyError),
    #[error("login: environment variable {var} is not set")]
    SecretEnvUnset { var: String },
    #[error("login: cannot read {}", path.display())]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("login: the state secret has {len} bytes; at least 32 are required")]
    StateSecretTooShort { len: usize },
}

fn read_secret(
    env_var: Option<&String>,
    file: Option<&PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, LoginKeyringError> {
    let mut bytes = match (env_var, file) {
        (Some(var), _) => env(var)
            .ok_or_else(|| LoginKeyringError::SecretEnvUnset { var: var.clone() })?
            .into_bytes(),
        (None, Some(path)) => {
            std::fs::read(path).map_err(|source| LoginKeyringError::ReadSecret {
                path: path.clone(),
                source,
            })?
        }
        (None, None) => Vec::new(),
    };
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// Reads the login signing keys (the first signs) and the client and state secrets.
pub fn load_login(
    config: &LoginConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoginMaterial, LoginKeyringError> {
    let read_file = |index: usize, path: &Path| {
        std::fs::read(path).map_err(|source| LoginKeyringError::Read {
            index,
            path: path.to_owned(),
            source,
        })
    };
    let mut pems = Vec::new();
    for (i, k) in config.signing_keys.iter().enumerate() {
        let public = read_file(i, &k.public_key_file)?;
        let private = match (&k.private_key_file, i) {
            (Some(p), 0) => Some(read_file(i, p)?),
            _ => None,
        };
        pems.push((algorithm(k.algorithm), public, private));
    }
    let material: Vec<IssuerKeyMaterial<'_>> = pems
        .iter()
        .map(|(alg, public, private)| IssuerKeyMaterial {
            algorithm: *alg,
            public_pem: public,
            private_pem: private.as_deref(),
        })
        .collect();
    let keys = IssuerKeys::new(&material).map_err(LoginKeyringError::Refused)?;
    let client_secret = read_secret(
        config.provider.client_secret_env.as_ref(),
        config.provider.client_secret_file.as_ref(),
        &env,
    )?;
    let state_secret = read_secret(
        config.state_secret_env.as_ref(),
        config.state_secret_file.as_ref(),
        &env,
    )?;
    if state_secret.len() < 32 {
        return Err(LoginKeyringError::StateSecretTooShort {
            len: state_secret.len(),
        });
    }
    Ok(LoginMaterial {
        keys,
        client_secret: String::from_utf8_lossy(&client_secret).into_owned(),
        state_secret,
    })
}

/// The verifying keys of the login section, for Check's key set.
pub fn login_verifying_keys(config: &LoginConfig) -> Result<Vec<VerifyingKey>, LoginKeyringError> {
    let mut pems = Vec::new();
    for (i, k) in config.signing_keys.iter().enumerate() {
        let public =
            std::fs::read(&k.public_key_file).map_err(|source| LoginKeyringError::Read {
                index: i,
                path: k.public_key_file.clone(),
                source,
            })?;
        pems.push((algorithm(k.algorithm), public));
    }
    let material: Vec<IssuerKeyMaterial<'_>> = pems
        .iter()
        .map(|(alg, public)| IssuerKeyMaterial {
            algorithm: *alg,
            public_pem: public,
            private_pem: None,
        })
        .collect();
    IssuerKeys::verifying_keys(&material).map_err(LoginKeyringError::Refused)
}
