//! The configuration tree: the serde types, loaded as defaults (`defaults`) < file < environment
//! (`env`), then validated (`validate`) before any port is bound. `config check` and `serve`
//! share it. Every section denies unknown fields; secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::authz::{PermissionSource, SubjectClaim};
use serde::Deserialize;

mod defaults;
mod env;
mod login;
mod validate;

pub use login::{
    is_acceptable_url, is_loopback, AccountRules, CookieConfig, LoginConfig, LoginKeyConfig,
    MintConfig, ProviderConfig, RedirectConfig, SignOutConfig, SignOutPrompt, HANDOFF_CODE_TTL,
};

pub use defaults::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_API_TOKEN_CACHE_TTL, DEFAULT_API_TOKEN_HEADER,
    DEFAULT_COOKIE_NAME, DEFAULT_DATABASE_URL, DEFAULT_GC_INTERVAL, DEFAULT_LAST_USED_FLUSH,
    DEFAULT_LEEWAY, DEFAULT_LISTEN, DEFAULT_LOG_LEVEL, DEFAULT_MAX_CONNECTIONS, DEFAULT_MINT_TTL,
    DEFAULT_RELOAD_INTERVAL, DEFAULT_SHUTDOWN_GRACE, DEFAULT_TOKEN_CACHE_CAPACITY,
    DEFAULT_TOKEN_CACHE_TTL,
};
pub use env::{ENV_DATABASE_URL, ENV_LISTEN, ENV_LOG_FORMAT, ENV_LOG_LEVEL};
pub use validate::MAX_LEEWAY;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("environment variable {name}: {value:?} is not {expected}")]
    Env {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: Problem },
}

/// What is wrong with a configured value (the field is named by `ConfigError::Invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must start with sqlite: or postgres://")]
    UnsupportedDatabaseUrl,
    #[error("must be at least 1")]
    NotPositive,
    #[error("must be at least 100ms")]
    ReloadTooFrequent,
    #[error("must be at least 1s")]
    KeepaliveTooShort,
    #[error("must be at most {}", humantime::format_duration(validate::MAX_LEEWAY))]
    LeewayTooLong,
    #[error("{0:?} is not a cookie name")]
    NotACookieName(String),
    #[error("{0:?} must be a lower-case header name other than authorization, cookie or x-auth-*")]
    UnusableTokenHeader(String),
    #[error("cache ttls and capacity must be positive")]
    CacheTtlsNotPositive,
    #[error("must not be empty")]
    Empty,
    #[error("must be between 0 and 1")]
    NotAFraction,
    #[error("{0:?} is listed twice")]
    ListedTwice(String),
    #[error("{0:?} must be an https URL (http only on loopback)")]
    NotHttpsUrl(String),
    #[error("set exactly one of {0} and {1}")]
    ExactlyOne(&'static str, &'static str),
    #[error("must include openid")]
    MissingOpenidScope,
    #[error("must be at least {0}")]
    TooShort(&'static str),
    #[error("is required")]
    Required,
    #[error("HMAC keys cannot be published; use ES256, RS256 or EdDSA")]
    SymmetricPublished,
    #[error("{0:?} is not a lower-case domain name")]
    NotADomain(String),
    #[error("{0:?} is not an origin (scheme://host[:port], https or loopback http)")]
    NotAnOrigin(String),
    #[error("is not a loopback address: set server.admin_token_file (or server.admin_insecure: true to let anyone who can connect read /status and /metrics)")]
    AdminNeedsToken,
    #[error("{0:?} differs from login.token.{1}; portcullis must accept the tokens it mints")]
    DiffersFromLogin(String, &'static str),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default)]
    pub api_tokens: ApiTokenConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Sign-in at an OpenID provider, and portcullis as the issuer of the JWT.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// Whether upstreams receive the caller's credential (`Authorization`, the API-token
    /// header, the JWT cookie) on allow. By default they do not: the `x-auth-*` headers say
    /// who is calling, and a token in an upstream's hands could be replayed elsewhere.
    #[serde(default)]
    pub forward_credential: ForwardCredentialConfig,
}

/// `forward_credential`: which upstreams receive the caller's credential (the decision core
/// applies it in both modes).
pub use crate::authz::ForwardCredentialConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// The header an API token may be sent in (besides `Authorization: Bearer`).
    #[serde(default = "defaults::api_token_header")]
    pub header: String,
    /// How long a resolved token is trusted without asking the store again.
    #[serde(default = "defaults::api_token_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long an unknown, revoked or expired token is remembered as such.
    /// How often last-used times are written, in one batch, off the request path.
    #[serde(default = "defaults::last_used_flush", with = "humantime_serde")]
    pub last_used_flush: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Plain-HTTP admin endpoint (`/status`, `/ready`, `/live`, `/metrics`); `null` to
    /// disable. Off loopback it needs `admin_token_file` (or `admin_insecure`).
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: Option<SocketAddr>,
    /// A file holding the bearer token `/status` and `/metrics` require
    /// (`Authorization: Bearer …`); `/live` and `/ready` stay open for probes. Never inline.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve `/metrics` without the token, for a scraper that cannot send one.
    #[serde(default)]
    pub admin_metrics_open: bool,
    /// Serve the admin endpoint off loopback with no token: whoever can connect reads
    /// `/status` and `/metrics`. Only where the network alone keeps everyone else out.
    #[serde(default)]
    pub admin_insecure: bool,
    /// Plain-HTTP login endpoints (`/auth/*`, `/.well-known/*`), behind Envoy; `null` (the
    /// default) disables them. Needs the `login` section.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// Plain-HTTP ext_authz (`envoyExtAuthzHttp`, Envoy `http_service`, nginx `auth_request`,
    /// Traefik `forwardAuth`): the same decision as Check, answered with a status code and
    /// headers. `null` (the default) disables it.
    #[serde(default)]
    pub http_authz_listen: Option<SocketAddr>,
    /// Decide on `X-Forwarded-Method`, `X-Forwarded-Uri` and `X-Forwarded-Host` instead of the
    /// check request's own method, target and Host. Only for a proxy that always sets all
    /// three itself, overwriting any a client sent (nginx `auth_request` must); never when
    /// clients can reach the listener. A check without exactly one of each is denied.
    #[serde(default)]
    pub http_authz_trust_forwarded: bool,
    /// How long in-flight checks may take to finish after SIGTERM.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Checks in flight on one connection (Envoy multiplexes a worker's checks on one HTTP/2
    /// connection); beyond it a Check is refused at once with RESOURCE_EXHAUSTED, which Envoy
    /// answers with its `status_on_error` (503), instead of queueing past Envoy's timeout.
    #[serde(default = "defaults::max_concurrent_checks")]
    pub max_concurrent_checks: usize,
    /// HTTP/2 PING interval on idle connections, so a dead peer is noticed.
    #[serde(default = "defaults::http2_keepalive", with = "humantime_serde")]
    pub http2_keepalive: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://…`.
    #[serde(default = "defaults::database_url")]
    pub url: Secret<String>,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// How often the policy version is polled; a change rebuilds the snapshot.
    #[serde(default = "defaults::reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// How often this sidecar runs a housekeeping round (expired and revoked tokens, ended
    /// sessions; one leader at a time does the work, see `store::gc`). `0` or `null`: never.
    #[serde(default = "defaults::gc_interval", with = "humantime_serde")]
    pub gc_interval: Option<Duration>,
}

impl DatabaseConfig {
    /// The housekeeping interval, when housekeeping is on.
    pub fn gc_every(&self) -> Option<Duration> {
        self.gc_interval.filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss` when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values; when non-empty a token must carry one of them.
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default = "defaults::cookie_name")]
    pub cookie_name: String,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWKS document on disk with public keys (each needs a `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Keys for `jwt.issuer`, fetched from this JWKS URL (refreshed like an outside issuer's).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Outside issuers whose tokens Check accepts, each with its own keys (fetched from its
    /// JWKS URL) and audience. A token must name the issuer of the key that verified it.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// The `kid` `jwt mint` signs with.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Where a JWT caller's permissions come from: the token's claims as issued (`token`), or
    /// the user's current roles in the store (`store`), so a role removal applies within the
    /// reload bound instead of at token expiry.
    #[serde(default)]
    pub permissions_from: PermissionSource,
    /// Which claim names the stored user: `sub` (the stored user id, as `jwt mint` issues) or
    /// `email` (a verified `email`, for tokens from an outside identity provider).
    #[serde(default)]
    pub subject_claim: SubjectClaim,
    #[serde(default = "defaults::token_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    #[serde(default = "defaults::token_cache_capacity")]
    pub cache_capacity: u64,
}

/// An outside issuer Check trusts: its keys come from `jwks_url` (https, or http on loopback),
/// fetched at start, refreshed before `max-age`, and on an unknown kid at most once per
/// `jwks_cooldown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub jwks_url: String,
    /// Accepted `aud` values (at least one).
    pub audience: Vec<String>,
    #[serde(default = "defaults::jwks_cooldown", with = "humantime_serde")]
    pub jwks_cooldown: Duration,
    #[serde(default = "defaults::fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    pub algorithm: JwtAlgorithm,
    /// HMAC secret: the name of an environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// HMAC secret: a file holding it (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// PEM public key for RS*, PS*, ES*, EdDSA.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// PEM private key, only needed to mint tokens with this key.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

/// The signature algorithms a configured key may be for: exactly the supported set, so an
/// unknown name is a parse error naming the field. A key verifies only its own algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    #[serde(rename = "HS256")]
    Hs256,
    #[serde(rename = "HS384")]
    Hs384,
    #[serde(rename = "HS512")]
    Hs512,
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "RS384")]
    Rs384,
    #[serde(rename = "RS512")]
    Rs512,
    #[serde(rename = "PS256")]
    Ps256,
    #[serde(rename = "PS384")]
    Ps384,
    #[serde(rename = "PS512")]
    Ps512,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "ES384")]
    Es384,
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl JwtAlgorithm {
    /// The name as written in the config file and in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Hs384 => "HS384",
            JwtAlgorithm::Hs512 => "HS512",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs384 => "RS384",
            JwtAlgorithm::Rs512 => "RS512",
            JwtAlgorithm::Ps256 => "PS256",
            JwtAlgorithm::Ps384 => "PS384",
            JwtAlgorithm::Ps512 => "PS512",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
            JwtAlgorithm::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `portcullis=debug`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// The decision log: one JSON event per decision (`log.decisions`).
    #[serde(default)]
    pub decisions: DecisionLogConfig,
}

/// sqlx's own lines at or above this level only, unless `log.level` names sqlx: portcullis
/// reports a store outage itself, in one line when it starts and one when it ends, and sqlx's
/// pool would add its own (`ping on idle connection returned error`, at info) for every
/// connection it drops.
pub const SQLX_LOG_LEVEL: &str = "warn";

impl LogConfig {
    /// The tracing filter the process logs with: `log.level`, and sqlx held to
    /// [`SQLX_LOG_LEVEL`] unless `log.level` says otherwise for it.
    pub fn filter(&self) -> String {
        let level = self.level.trim();
        if level.split(',').any(|d| d.trim_start().starts_with("sqlx")) {
            level.to_owned()
        } else if level.is_empty() {
            format!("sqlx={SQLX_LOG_LEVEL}")
        } else {
            format!("{level},sqlx={SQLX_LOG_LEVEL}")
        }
    }
}

/// `log.decisions`: where decision events go and how many.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// `off` (the default), `stdout`, or a file path (appended to).
    #[serde(default = "defaults::decision_log_output")]
    pub output: String,
    /// The fraction of allows logged, 0 to 1 (denies are always logged, up to the limit).
    #[serde(default = "defaults::decision_log_allow_sample")]
    pub allow_sample: f64,
    /// Most deny events a second; more are dropped and counted.
    #[serde(default = "defaults::decision_log_deny_limit")]
    pub deny_limit_per_second: u32,
    /// Keep the query string of the path (off by default: queries carry tokens and PII).
    #[serde(default)]
    pub include_query: bool,
}

/// A value that must never be printed: `Debug` shows `**redacted**`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

impl Config {
    /// Defaults, then the file (if given), then `PORTCULLIS_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_yaml(path, &text)?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_yaml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        // An empty file is an all-defaults config.
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_norway::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
