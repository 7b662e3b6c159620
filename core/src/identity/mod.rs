//! Who is calling: credential extraction (`credential`), JWT verification (`verify`) against
//! keys built from bytes (`keys`, `jwk`, `pem`, held to the `strength` rules), minting (`mint`)
//! and API tokens (`api_token`), with caches of resolved identities keyed by a SHA-256 digest
//! of the token, never the token. A cached JWT identity expires no later than the token; a
//! store failure is never cached. Knows nothing of policy, gRPC, SQL, files or configuration:
//! the caller reads key files and settings and hands over bytes and `settings` values.

pub mod api_token;
pub mod credential;
mod identifier;
pub mod jwk;
mod key_error;
pub mod keys;
mod mint;
mod pem;
pub mod principal;
pub mod publish;
pub mod settings;
mod strength;
pub mod verify;

use sha2::{Digest, Sha256};

pub use api_token::{FormatError, TokenOwner, TokenRecord};
pub use credential::{CredentialError, Presented, Source};
pub use identifier::{ApiTokenCache, Identified, Identifier, IdentifyCounts};
pub use jwk::{JwkError, JwkSetError};
pub use key_error::{Curve, KeyError, MIN_RSA_BITS};
pub use keys::{IssuerBinding, KeyRef, KeySet, RemoteKeys, SigningKey, VerifyingKey};
pub use principal::{
    CredentialKind, JwtCaller, PresentedKind, Principal, SubjectType, TokenCaller, TokenSubject,
    UnixTime,
};
pub use publish::{IssuerKeyMaterial, IssuerKeys, PublishedKey};
pub use settings::{ApiTokenSettings, JwtSettings};
pub use verify::{ClaimRules, Claims, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// A JWT that was presented and refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// An API token that was presented and refused (its format).
    #[error(transparent)]
    ApiToken(TokenError),
}

impl IdentityError {
    /// The kind of credential that was presented and refused.
    pub fn presented(&self) -> PresentedKind {
        match self {
            IdentityError::Credential(_) => PresentedKind::Unreadable,
            IdentityError::Token(_) => PresentedKind::Jwt,
            IdentityError::ApiToken(_) => PresentedKind::ApiToken,
        }
    }
}

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests;
