//! The OpenID provider, as portcullis's client: discovery, the code-flow client (the
//! `openidconnect` crate does the protocol and the ID-token checks), and the provider's keys.
//! Every fetch is bounded in size and time, https only (http on loopback for tests), with no
//! redirects followed. Keys: fetched at start, refreshed in the background before `max-age`
//! runs out; an unknown `kid` causes at most one fetch in flight and one per cooldown, unknown
//! kids are remembered, and a failed fetch keeps the last good set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::core::{
    CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClientId, ClientSecret, EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IssuerUrl, JsonWebKey, Nonce, ProviderMetadataWithLogout, RedirectUrl,
};
use serde::Deserialize;

use crate::config::{is_acceptable_url, LoginConfig};

/// Largest discovery document, JWKS, tokeninfo or userinfo answer read.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Refresh keys at this fraction of their `max-age`, and not more often than `MIN_REFRESH`.
const MIN_REFRESH: Duration = Duration::from_secs(60);
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Unknown kids remembered at most (the oldest are forgotten first).
const MAX_UNKNOWN_KIDS: usize = 1024;

pub type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

mod keys;

use keys::*;
pub use keys::{fetch, http_client, ProviderError, ProviderKeys};

/// The provider, discovered.
pub struct Provider {
    pub issuer: IssuerUrl,
    pub client: OidcClient,
    pub http: reqwest::Client,
    pub keys: Arc<ProviderKeys>,
    /// Every client id whose tokens are accepted (web first).
    pub client_ids: Vec<String>,
    pub userinfo_url: Option<String>,
    pub tokeninfo_url: Option<String>,
    /// RP-Initiated Logout: where the provider ends its own session, when it says so.
    pub end_session_url: Option<EndSessionUrl>,
    /// When to refresh the keys next.
    pub refresh_after: Duration,
}

/// The algorithms a provider's ID token may be signed with: asymmetric only.
fn allowed_algs() -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm::*;
    vec![
        RsaSsaPkcs1V15Sha256,
        RsaSsaPkcs1V15Sha384,
        RsaSsaPkcs1V15Sha512,
        RsaSsaPssSha256,
        RsaSsaPssSha384,
        RsaSsaPssSha512,
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EdDsa,
    ]
}

impl Provider {
    /// Discovery and the first key fetch.
    pub async fn discover(
        config: &LoginConfig,
        client_secret: ClientSecret,
    ) -> Result<Self, ProviderError> {
        let p = &config.provider;
        let http = http_client(p.fetch_timeout).map_err(|source| ProviderError::Fetch {
            url: p.issuer.clone(),
            source,
        })?;
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let (body, _) = fetch(&http, &discovery, None).await?;
        let metadata: ProviderMetadataWithLogout = json(&discovery, &body)?;
        if metadata.issuer().as_str() != p.issuer {
            return Err(ProviderError::IssuerMismatch {
                found: metadata.issuer().to_string(),
                expected: p.issuer.clone(),
            });
        }
        for url in [
            Some(metadata.authorization_endpoint().as_str()),
            metadata.token_endpoint().map(|u| u.as_str()),
            Some(metadata.jwks_uri().as_str()),
            metadata.userinfo_endpoint().map(|u| u.as_str()),
            metadata
                .additional_metadata()
                .end_session_endpoint
                .as_ref()
                .map(|u| u.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if !is_acceptable_url(url) {
                return Err(ProviderError::InsecureUrl(url.to_owned()));
            }
        }
        if metadata.token_endpoint().is_none() {
            return Err(ProviderError::NoTokenEndpoint);
        }
        let keys = Arc::new(ProviderKeys::new(
            metadata.jwks_uri().to_string(),
            http.clone(),
            p.jwks_cooldown,
        ));
        let refresh_after = {
            let mut state = keys.fetch_state.lock().await;
            keys.fetch_locked(&mut state).await?
        };
        let userinfo_url = metadata.userinfo_endpoint().map(|u| u.to_string());
        let end_session_url = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(format!(
            "{}/auth/callback",
            config.public_url.trim_end_matches('/')
        ))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(p.client_id.clone()),
            Some(client_secret),
        )
        .set_redirect_uri(redirect);
        Ok(Provider {
            issuer: IssuerUrl::new(p.issuer.clone())?,
            client,
            http,
            keys,
            client_ids: p.client_ids(),
            userinfo_url,
            tokeninfo_url: p.tokeninfo(),
            end_session_url,
            refresh_after,
        })
    }

    /// Verifies a provider ID token: signature against the provider's keys (refreshed for an
    /// unknown kid within the rules), `iss`, `aud` (one of our client ids, and no untrusted
    /// other audience), `azp` (one of ours; required with several audiences), `exp`, and the
    /// nonce when one is expected.
    pub async fn verify_id_token(
        &self,
        token: &CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<VerifiedIdToken, IdTokenError> {
        let compact = token.to_string();
        let (header, payload) = unverified_parts(&compact).ok_or(IdTokenError::Malformed)?;
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .map(str::to_owned);
        // The client id the token is for: the first of ours among its audiences.
        let audiences: Vec<String> = match payload.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let Some(client_id) = audiences
            .iter()
            .find(|a| self.client_ids.contains(a))
            .cloned()
        else {
            return Err(IdTokenError::Audience);
        };
        let jwks = self.keys.keys_for(kid.as_deref()).await;
        let ours = self.client_ids.clone();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(client_id),
            self.issuer.clone(),
            (*jwks).clone(),
        )
        .set_allowed_algs(allowed_algs())
        .set_other_audience_verifier_fn(move |aud| ours.iter().any(|o| o == aud.as_str()));
        let claims = match nonce {
            Some(n) => token.claims(&verifier, n),
            None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(|e| IdTokenError::Claims(e.to_string()))?;
        match claims.authorized_party() {
            Some(azp) if !self.client_ids.iter().any(|c| c == azp.as_str()) => {
                return Err(IdTokenError::AuthorizedParty)
            }
            None if claims.audiences().len() > 1 => return Err(IdTokenError::AuthorizedParty),
            _ => {}
        }
        let email_verified = match payload.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            // Some providers send "true"/"false" strings.
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(VerifiedIdToken {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified,
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            hd: payload
                .get("hd")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }

    /// Verifies a provider access token: the tokeninfo endpoint must say it was issued to one
    /// of our client ids, and userinfo gives the account's claims (with the same `sub`).
    pub async fn verify_access_token(&self, token: &str) -> Result<VerifiedIdToken, IdTokenError> {
        let Some(tokeninfo) = &self.tokeninfo_url else {
            return Err(IdTokenError::AccessTokensUnsupported);
        };
        let Some(userinfo) = &self.userinfo_url else {
            return Err(IdTokenError::AccessTokensUnsupported);
        };
        let mut url = url::Url::parse(tokeninfo).map_err(|_| IdTokenError::Malformed)?;
        url.query_pairs_mut().append_pair("access_token", token);
        let (body, _) = fetch(&self.http, url.as_str(), None)
            .await
            .map_err(|_| IdTokenError::Rejected)?;
        let info: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| IdTokenError::Rejected)?;
        let ours = |field: &str| {
            info.get(field)
                .and_then(|v| v.as_str())
                .is_some_and(|c| self.client_ids.iter().any(|o| o == c))
        };
        // Google: `aud` is the client the token was issued to, `azp` the requesting party.
        if !(ours("aud") || ours("azp")) {
            return Err(IdTokenError::Audience);
        }
        if info
            .get("expires_in")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    .or(v.as_i64())
            })
            .is_some_and(|n| n <= 0)
        {
            return Err(IdTokenError::Claims("access token expired".to_owned()));
        }
        let (body, _) = fetch(&self.http, userinfo, Some(token))
            .await
            .map_err(|_| IdTokenError::Rejected)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| IdTokenError::Rejected)?;
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or(IdTokenError::Rejected)?;
        if info.get("sub").and_then(|v| v.as_str()) != Some(subject) {
            return Err(IdTokenError::Rejected);
        }
        let email_verified = match claims.get("email_verified") {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        let text = |f: &str| claims.get(f).and_then(|v| v.as_str()).map(str::to_owned);
        Ok(VerifiedIdToken {
            subject: subject.to_owned(),
            email: text("email"),
            email_verified,
            name: text("name"),
            hd: text("hd"),
        })
    }
}

/// The header and payload of a compact JWS, unverified: only to pick the key and client id.
fn unverified_parts(compact: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let mut parts = compact.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    let payload = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
    Some((
        serde_json::from_slice(&header).ok()?,
        serde_json::from_slice(&payload).ok()?,
    ))
}

/// What a verified provider token says about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdToken {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub hd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not for one of our client ids")]
    Audience,
    #[error("the token's authorized party is not one of our client ids")]
    AuthorizedParty,
    #[error("the token was refused: {0}")]
    Claims(String),
    #[error("the provider refused the token")]
    Rejected,
    #[error("this provider's access tokens cannot be exchanged (no tokeninfo or userinfo)")]
    AccessTokensUnsupported,
}

#[cfg(test)]
mod tests;
