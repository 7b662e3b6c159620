//! The keys tokens are verified (and minted) with, built from bytes the caller has already read:
//! PEM documents and HMAC secrets here, JWKs in `jwk`. Every constructor passes the key through
//! the `strength` rules first, so a `KeySet` holds only keys that pass them, each bound to the
//! one algorithm it is for, by `kid`.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

pub use super::key_error::KeyError;
use super::pem::{self as pem_key, PrivateKey, PublicKey};
use super::strength::{self, KeyShape};

/// A public (or HMAC) key tokens may be verified with, and the one algorithm it is for.
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub(super) key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl VerifyingKey {
    /// A key from a PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`) for `algorithm`.
    pub fn from_pem(kid: &str, algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let public = pem_key::public_key(pem)?;
        strength::check(&public.shape(), algorithm)?;
        let key = match &public {
            PublicKey::Rsa { pkcs1, .. } => DecodingKey::from_rsa_der(pkcs1),
            PublicKey::Ec { point, .. } => DecodingKey::from_ec_der(point),
            PublicKey::Ed25519 { raw } => DecodingKey::from_ed_der(raw),
        };
        Ok(VerifyingKey::checked(kid, algorithm, key))
    }

    /// An HMAC key from raw secret bytes.
    pub fn hmac(kid: &str, algorithm: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        strength::check(&KeyShape::Secret { len: secret.len() }, algorithm)?;
        let key =
            DecodingKey::from_secret(secret).map_err(|source| KeyError::Unusable { source })?;
        Ok(VerifyingKey::checked(kid, algorithm, key))
    }

    /// Only for key material that has passed `strength::check` for `algorithm`.
    pub(super) fn checked(kid: &str, algorithm: Algorithm, key: DecodingKey) -> Self {
        VerifyingKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        }
    }
}

/// A private (or HMAC) key `jwt mint` signs with, and its algorithm.
pub struct SigningKey {
    pub(super) kid: String,
    pub(super) algorithm: Algorithm,
    pub(super) key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl SigningKey {
    /// A key from a PEM private key (`PRIVATE KEY` or `RSA PRIVATE KEY`) for `algorithm`.
    pub fn from_pem(kid: &str, algorithm: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let private = pem_key::private_key(pem)?;
        strength::check(&private.shape(), algorithm)?;
        let key = match &private {
            PrivateKey::Rsa { pkcs1, .. } => EncodingKey::from_rsa_der(pkcs1),
            PrivateKey::Ec { pkcs8, .. } => EncodingKey::from_ec_der(pkcs8),
            PrivateKey::Ed25519 { pkcs8 } => EncodingKey::from_ed_der(pkcs8),
        };
        Ok(SigningKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        })
    }

    /// An HMAC key from raw secret bytes.
    pub fn hmac(kid: &str, algorithm: Algorithm, secret: &[u8]) -> Result<Self, KeyError> {
        strength::check(&KeyShape::Secret { len: secret.len() }, algorithm)?;
        let key =
            EncodingKey::from_secret(secret).map_err(|source| KeyError::Unusable { source })?;
        Ok(SigningKey {
            kid: kid.to_owned(),
            algorithm,
            key,
        })
    }
}

/// What a token verified by a key must claim: its issuer and one of its audiences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerBinding {
    pub issuer: String,
    pub audience: Vec<String>,
}

/// The keys of an outside issuer, fetched from its JWKS URL by the caller and replaced whole;
/// a token naming a kid not in it calls `wanted` (which must not block: the fetch happens
/// elsewhere, within its own rate rules). Tokens verified by these keys must name the issuer
/// and one of its audiences.
pub struct RemoteKeys {
    binding: IssuerBinding,
    keys: arc_swap::ArcSwap<HashMap<String, Arc<VerifyingKey>>>,
    wanted: Box<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("binding", &self.binding)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl RemoteKeys {
    pub fn new(binding: IssuerBinding, wanted: Box<dyn Fn(&str) + Send + Sync>) -> Self {
        RemoteKeys {
            binding,
            keys: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            wanted,
        }
    }

    /// Replaces the whole set (a fetched JWKS, already parsed and checked).
    pub fn replace(&self, keys: Vec<VerifyingKey>) {
        let map = keys
            .into_iter()
            .map(|k| (k.kid.clone(), Arc::new(k)))
            .collect();
        self.keys.store(Arc::new(map));
    }

    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has(&self, kid: &str) -> bool {
        self.keys.load().contains_key(kid)
    }

    pub fn binding(&self) -> &IssuerBinding {
        &self.binding
    }

    fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.load().get(kid).cloned()
    }
}

/// The key a token was verified with: configured, or fetched from an outside issuer.
#[derive(Debug)]
pub enum KeyRef<'a> {
    Local(&'a VerifyingKey),
    Remote(Arc<VerifyingKey>, &'a IssuerBinding),
}

impl std::ops::Deref for KeyRef<'_> {
    type Target = VerifyingKey;
    fn deref(&self) -> &VerifyingKey {
        match self {
            KeyRef::Local(k) => k,
            KeyRef::Remote(k, _) => k,
        }
    }
}

/// The configured keys, by `kid`, and the optional signing key for `jwt mint`; and the keys of
/// outside issuers, looked up only when no configured key has the kid.
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    signing: Option<SigningKey>,
    remote: Vec<Arc<RemoteKeys>>,
    /// When outside issuers are configured: what tokens of the configured keys must claim.
    local_binding: Option<IssuerBinding>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.values().collect::<Vec<_>>())
            .field("signing", &self.signing.as_ref().map(|s| &s.kid))
            .finish()
    }
}

impl KeySet {
    /// A key set; refused when two keys share a `kid`.
    pub fn new(
        keys: impl IntoIterator<Item = VerifyingKey>,
        signing: Option<SigningKey>,
    ) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        for key in keys {
            if let Some(twice) = map.insert(key.kid.clone(), key) {
                return Err(KeyError::DuplicateKid { kid: twice.kid });
            }
        }
        Ok(KeySet {
            keys: map,
            signing,
            remote: Vec::new(),
            local_binding: None,
        })
    }

    /// Adds outside issuers' keys; tokens of the configured keys must then satisfy
    /// `local_binding` when given (the claim rules no longer pin one issuer).
    pub fn with_remote(
        mut self,
        remote: Vec<Arc<RemoteKeys>>,
        local_binding: Option<IssuerBinding>,
    ) -> Self {
        self.remote = remote;
        self.local_binding = local_binding;
        self
    }

    /// A configured key, or an outside issuer's (asking for a refresh when none has it).
    pub(super) fn find(&self, kid: &str) -> Option<KeyRef<'_>> {
        if let Some(k) = self.keys.get(kid) {
            return Some(KeyRef::Local(k));
        }
        for r in &self.remote {
            if let Some(k) = r.get(kid) {
                return Some(KeyRef::Remote(k, &r.binding));
            }
        }
        // Unknown everywhere: every issuer may have rotated to it.
        for r in &self.remote {
            (r.wanted)(kid);
        }
        None
    }

    /// The binding tokens of the configured keys must satisfy, if any.
    pub(super) fn local_binding(&self) -> Option<&IssuerBinding> {
        self.local_binding.as_ref()
    }

    /// Builds a key set from keys already loaded, the last of a `kid` winning (tests, JWKS).
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        KeySet {
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
            signing: None,
            remote: Vec::new(),
            local_binding: None,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The key, when there is exactly one.
    pub fn only(&self) -> Option<&VerifyingKey> {
        match self.keys.len() {
            1 => self.keys.values().next(),
            _ => None,
        }
    }

    pub fn signing(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }
}
