//! Minting tokens with the configured signing key (`jwt mint`): the header names the key's
//! `kid` and its one algorithm, so every minted token verifies against the same key set.

use serde::Serialize;

use super::keys::{KeyError, KeySet};

impl KeySet {
    /// Signs `claims` with the configured signing key.
    pub fn mint<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let signer = self
            .signing()
            .ok_or_else(|| KeyError::NoSigningKey { kid: String::new() })?;
        let mut header = jsonwebtoken::Header::new(signer.algorithm);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.key).map_err(|source| KeyError::Sign {
            kid: signer.kid.clone(),
            source,
        })
    }
}
