//! What the identifier is told, in its own terms: the claim rules, the cookie a JWT may come
//! in, the API-token header and the cache bounds. Built at the edge (`keyring` converts the
//! config); identity never reads configuration itself.

use std::time::Duration;

use super::verify::ClaimRules;

/// How JWTs are checked, where they are found, and how long a verified one is remembered.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub rules: ClaimRules,
    pub cookie_name: String,
    pub cache_ttl: Duration,
    /// Entries in each cache (verified JWTs, resolved API tokens).
    pub cache_capacity: u64,
}

/// Where API tokens are found and how long a resolved identity is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenSettings {
    pub header: String,
    pub cache_ttl: Duration,
}

/// The header an API token may be sent in by default (besides `Authorization: Bearer`).
pub const DEFAULT_API_TOKEN_HEADER: &str = "x-api-token";

impl Default for ApiTokenSettings {
    /// The config's defaults (a keyring test keeps the two equal).
    fn default() -> Self {
        ApiTokenSettings {
            header: DEFAULT_API_TOKEN_HEADER.to_owned(),
            cache_ttl: Duration::from_secs(30),
        }
    }
}
