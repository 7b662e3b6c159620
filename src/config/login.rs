//! The `login` section: portcullis as the issuer of its own JWTs after a sign-in at an OpenID
//! provider (Google by default). Which provider and client, which accounts may sign in, what
//! the minted token and its cookie look like, where a browser may be sent back to, and the
//! keys that sign. Checked by `validate_login` before any port is bound; secrets are read by
//! the keyring, never printed.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, JwtAlgorithm, Problem};

/// Google's issuer, the default provider.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Google's tokeninfo endpoint: which client an access token was issued to.
pub const GOOGLE_TOKENINFO_URL: &str = "https://oauth2.googleapis.com/tokeninfo";
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a login may take at the provider (the life of the transaction cookie).
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
/// A handoff code lives at most this long (and is used once).
pub const HANDOFF_CODE_TTL: Duration = Duration::from_secs(60);
/// A cookie JWT is renewed by Check when it expires within this (and its session lives).
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(300);
/// A browser that signed out at a provider without `end_session_endpoint` remembers it this
/// long: its next sign-in asks (`sign_out.prompt`).
pub const DEFAULT_SIGNED_OUT_MEMORY: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Where browsers reach portcullis's HTTP endpoints (through Envoy), e.g.
    /// `https://auth.example.com`; the redirect URI is this plus `/auth/callback`.
    pub public_url: String,
    pub provider: ProviderConfig,
    #[serde(default)]
    pub accounts: AccountRules,
    /// Roles a user gets when their first sign-in creates them.
    #[serde(default)]
    pub default_roles: Vec<String>,
    pub token: MintConfig,
    /// The first signs; the rest only verify, so keys can rotate. `kid` is the RFC 7638
    /// thumbprint of the public key.
    pub signing_keys: Vec<LoginKeyConfig>,
    #[serde(default)]
    pub cookie: CookieConfig,
    pub redirects: RedirectConfig,
    /// Encrypts the short-lived login transaction cookie (state, nonce, PKCE verifier): the
    /// name of an environment variable holding at least 32 bytes.
    #[serde(default)]
    pub state_secret_env: Option<String>,
    /// The same, from a file.
    #[serde(default)]
    pub state_secret_file: Option<PathBuf>,
    /// Absolute lifetime of a session (and its refresh tokens).
    #[serde(default = "session_lifetime", with = "humantime_serde")]
    pub session_lifetime: Duration,
    #[serde(default = "login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Check renews a cookie JWT that expires within this, while its session lives, with the
    /// user's current roles (`Set-Cookie` on the response).
    #[serde(default = "renew_before", with = "humantime_serde")]
    pub renew_before: Duration,
    /// What signing out does at the provider.
    #[serde(default)]
    pub sign_out: SignOutConfig,
}

/// Signing out ends the provider's session too: RP-Initiated Logout where the provider
/// advertises an `end_session_endpoint`; elsewhere (Google) the browser remembers for a while
/// that it signed out, and its next sign-in asks instead of passing silently.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignOutConfig {
    /// Send the browser to the provider's `end_session_endpoint` when it has one.
    #[serde(default = "yes")]
    pub end_provider_session: bool,
    /// The `prompt` of the next sign-in from a browser that signed out without ending the
    /// provider's session.
    #[serde(default)]
    pub prompt: SignOutPrompt,
    /// How long a browser remembers that it signed out (a cookie; nothing kept server-side).
    #[serde(default = "signed_out_memory", with = "humantime_serde")]
    pub remember: Duration,
}

impl Default for SignOutConfig {
    fn default() -> Self {
        SignOutConfig {
            end_provider_session: true,
            prompt: SignOutPrompt::default(),
            remember: DEFAULT_SIGNED_OUT_MEMORY,
        }
    }
}

/// OpenID Connect `prompt` values that make the provider ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignOutPrompt {
    /// The account chooser (Google's; one click with a single account).
    #[default]
    SelectAccount,
    /// Sign in again (the provider asks for credentials).
    Login,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The OpenID issuer; its discovery document is `{issuer}/.well-known/openid-configuration`.
    #[serde(default = "google_issuer")]
    pub issuer: String,
    /// The web client id (the code flow's); ID tokens for it are accepted.
    pub client_id: String,
    /// More client ids (Android, iOS) whose ID and access tokens may be exchanged.
    #[serde(default)]
    pub other_client_ids: Vec<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Where an access token's client is looked up (Google's tokeninfo shape: `aud`/`azp`).
    /// Defaults to Google's for Google; without one, access tokens are not exchanged.
    #[serde(default)]
    pub tokeninfo_url: Option<String>,
    #[serde(default = "scopes")]
    pub scopes: Vec<String>,
    /// Least time between two JWKS fetches caused by an unknown `kid`.
    #[serde(default = "jwks_cooldown", with = "humantime_serde")]
    pub jwks_cooldown: Duration,
    #[serde(default = "fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRules {
    /// Google Workspace domain: the ID token's `hd` claim must equal it.
    #[serde(default)]
    pub hosted_domain: Option<String>,
    /// When non-empty, the verified email's domain must be one of these (exactly).
    #[serde(default)]
    pub email_domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintConfig {
    pub issuer: String,
    pub audience: String,
    #[serde(default = "token_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginKeyConfig {
    #[serde(default = "es256")]
    pub algorithm: JwtAlgorithm,
    pub public_key_file: PathBuf,
    /// Required for the first key (it signs).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieConfig {
    /// The parent domain every app shares (`example.com`); unset: host-only cookie.
    #[serde(default)]
    pub domain: Option<String>,
    /// `Secure`; only switch off for plain-HTTP tests on loopback.
    #[serde(default = "yes")]
    pub secure: bool,
    /// `Max-Age`; defaults to the token lifetime.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            domain: None,
            secure: true,
            max_age: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Exact origins (`https://app.example.com`, or `http://127.0.0.1:8080` for loopback).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Domains whose subdomains (and themselves) are allowed over https, matched on a dot
    /// boundary: `example.com` allows `https://a.example.com`, never `example.com.evil.com`.
    /// On the default port only; `example.com:10443` admits port 10443 only.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Where to go after login or logout when no target is given.
    pub default: String,
}

fn google_issuer() -> String {
    GOOGLE_ISSUER.to_owned()
}
fn scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(str::to_owned).to_vec()
}
fn jwks_cooldown() -> Duration {
    DEFAULT_JWKS_COOLDOWN
}
fn fetch_timeout() -> Duration {
    DEFAULT_FETCH_TIMEOUT
}
fn token_lifetime() -> Duration {
    DEFAULT_TOKEN_LIFETIME
}
fn session_lifetime() -> Duration {
    DEFAULT_SESSION_LIFETIME
}
fn login_timeout() -> Duration {
    DEFAULT_LOGIN_TIMEOUT
}
fn renew_before() -> Duration {
    DEFAULT_RENEW_BEFORE
}
fn signed_out_memory() -> Duration {
    DEFAULT_SIGNED_OUT_MEMORY
}
fn es256() -> JwtAlgorithm {
    JwtAlgorithm::Es256
}
fn yes() -> bool {
    true
}

impl ProviderConfig {
    /// Every client id whose tokens may be exchanged, the web one first.
    pub fn client_ids(&self) -> Vec<String> {
        let mut ids = vec![self.client_id.clone()];
        ids.extend(self.other_client_ids.iter().cloned());
        ids
    }

    /// The configured tokeninfo URL, or Google's for Google.
    pub fn tokeninfo(&self) -> Option<String> {
        self.tokeninfo_url
            .clone()
            .or_else(|| (self.issuer == GOOGLE_ISSUER).then(|| GOOGLE_TOKENINFO_URL.to_owned()))
    }
}

impl CookieConfig {
    pub fn max_age(&self, token_lifetime: Duration) -> Duration {
        self.max_age.unwrap_or(token_lifetime)
    }
}

/// https, or http on a loopback host (tests and local development).
pub fn is_acceptable_url(text: &str) -> bool {
    match url::Url::parse(text) {
        Ok(u) => match u.scheme() {
            "https" => u.host().is_some(),
            "http" => is_loopback(&u),
            _ => false,
        },
        Err(_) => false,
    }
}

pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn is_domain_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

mod validate;

#[cfg(test)]
mod tests;
