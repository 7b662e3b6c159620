//! The configuration tree: serde types with named defaults, environment overrides, and
//! validation that runs before any port is bound. `config check` and `serve` share it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::authz::PermissionSource;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9002";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://portcullis.db";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
pub const DEFAULT_COOKIE_NAME: &str = "jwt-token";
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 100_000;
pub const DEFAULT_MINT_TTL: Duration = Duration::from_secs(3600);

/// Environment variables that override the file (which overrides defaults).
pub const ENV_LISTEN: &str = "PORTCULLIS_LISTEN";
pub const ENV_DATABASE_URL: &str = "PORTCULLIS_DATABASE_URL";
pub const ENV_LOG_LEVEL: &str = "PORTCULLIS_LOG_LEVEL";
pub const ENV_LOG_FORMAT: &str = "PORTCULLIS_LOG_FORMAT";

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
    #[error("environment variable {name}: {problem}")]
    Env { name: &'static str, problem: String },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
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
}

pub const DEFAULT_API_TOKEN_HEADER: &str = "x-api-token";
pub const DEFAULT_API_TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);
pub const DEFAULT_API_TOKEN_NEGATIVE_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_LAST_USED_FLUSH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// The header an API token may be sent in (besides `Authorization: Bearer`).
    #[serde(default = "default_api_token_header")]
    pub header: String,
    /// How long a resolved token is trusted without asking the store again.
    #[serde(default = "default_api_token_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long an unknown, revoked or expired token is remembered as such.
    #[serde(default = "default_api_token_negative_ttl", with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// How often last-used times are written, in one batch, off the request path.
    #[serde(default = "default_last_used_flush", with = "humantime_serde")]
    pub last_used_flush: Duration,
}

fn default_api_token_header() -> String {
    DEFAULT_API_TOKEN_HEADER.to_owned()
}
fn default_api_token_cache_ttl() -> Duration {
    DEFAULT_API_TOKEN_CACHE_TTL
}
fn default_api_token_negative_ttl() -> Duration {
    DEFAULT_API_TOKEN_NEGATIVE_TTL
}
fn default_last_used_flush() -> Duration {
    DEFAULT_LAST_USED_FLUSH
}

impl Default for ApiTokenConfig {
    fn default() -> Self {
        ApiTokenConfig {
            header: default_api_token_header(),
            cache_ttl: DEFAULT_API_TOKEN_CACHE_TTL,
            negative_cache_ttl: DEFAULT_API_TOKEN_NEGATIVE_TTL,
            last_used_flush: DEFAULT_LAST_USED_FLUSH,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Plain-HTTP admin endpoint (`/status`, `/ready`, `/live`); `null` to disable.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight checks may take to finish after SIGTERM.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created if missing) or `postgres://…`.
    #[serde(default = "default_database_url")]
    pub url: Secret<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How often the policy version is polled; a change rebuilds the snapshot.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
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
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWKS document on disk with public keys (each needs a `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The `kid` `jwt mint` signs with.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Where a JWT caller's permissions come from: the token's claims as issued (`token`), or
    /// the user's current roles in the store (`store`), so a role removal applies within the
    /// reload bound instead of at token expiry.
    #[serde(default)]
    pub permissions_from: PermissionSource,
    #[serde(default = "default_token_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    #[serde(default = "default_token_cache_capacity")]
    pub cache_capacity: u64,
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
    #[serde(default = "default_log_level")]
    pub level: String,
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

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9001)))
}
fn default_admin_listen() -> Option<SocketAddr> {
    DEFAULT_ADMIN_LISTEN.parse().ok()
}
fn default_shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}
fn default_database_url() -> Secret<String> {
    Secret(DEFAULT_DATABASE_URL.to_owned())
}
fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_reload_interval() -> Duration {
    DEFAULT_RELOAD_INTERVAL
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_cookie_name() -> String {
    DEFAULT_COOKIE_NAME.to_owned()
}
fn default_token_cache_ttl() -> Duration {
    DEFAULT_TOKEN_CACHE_TTL
}
fn default_token_cache_capacity() -> u64 {
    DEFAULT_TOKEN_CACHE_CAPACITY
}
fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}
impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}
impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: None,
            audience: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            cookie_name: default_cookie_name(),
            keys: Vec::new(),
            jwks_file: None,
            signing_key: None,
            permissions_from: PermissionSource::Token,
            cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: default_log_level(),
        }
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

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env(ENV_LISTEN) {
            self.server.listen = v.parse().map_err(|_| ConfigError::Env {
                name: ENV_LISTEN,
                problem: format!("{v:?} is not an address like 127.0.0.1:9001"),
            })?;
        }
        if let Some(v) = env(ENV_DATABASE_URL) {
            self.database.url = Secret(v);
        }
        if let Some(v) = env(ENV_LOG_LEVEL) {
            self.log.level = v;
        }
        if let Some(v) = env(ENV_LOG_FORMAT) {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::Env {
                        name: ENV_LOG_FORMAT,
                        problem: format!("{v:?} is not text or json"),
                    })
                }
            };
        }
        Ok(())
    }

    /// Checks what serde cannot; key material is checked by `keyring::load`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            field: field.to_owned(),
            problem,
        };
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://".to_owned(),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "must be at least 1".to_owned(),
            ));
        }
        if self.database.reload_interval < Duration::from_millis(100) {
            return Err(invalid(
                "database.reload_interval",
                "must be at least 100ms".to_owned(),
            ));
        }
        if self.jwt.leeway > MAX_LEEWAY {
            return Err(invalid(
                "jwt.leeway",
                format!("must be at most {}", humantime::format_duration(MAX_LEEWAY)),
            ));
        }
        let cookie_ok = !self.jwt.cookie_name.is_empty()
            && self
                .jwt
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !cookie_ok {
            return Err(invalid(
                "jwt.cookie_name",
                format!("{:?} is not a cookie name", self.jwt.cookie_name),
            ));
        }
        let header = &self.api_tokens.header;
        let header_ok = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !header.starts_with("x-auth-")
            && header != "authorization"
            && header != "cookie";
        if !header_ok {
            return Err(invalid(
                "api_tokens.header",
                format!("{header:?} must be a lower-case header name other than authorization, cookie or x-auth-*"),
            ));
        }
        if self.api_tokens.cache_ttl.is_zero()
            || self.api_tokens.negative_cache_ttl.is_zero()
            || self.api_tokens.last_used_flush.is_zero()
        {
            return Err(invalid(
                "api_tokens.cache_ttl",
                "cache ttls must be positive".to_owned(),
            ));
        }
        if self.jwt.cache_capacity == 0 || self.jwt.cache_ttl.is_zero() {
            return Err(invalid(
                "jwt.cache_ttl",
                "cache ttl and capacity must be positive".to_owned(),
            ));
        }
        let mut kids = std::collections::HashSet::new();
        for (i, key) in self.jwt.keys.iter().enumerate() {
            if key.kid.is_empty() {
                return Err(invalid(
                    &format!("jwt.keys[{i}].kid"),
                    "must not be empty".to_owned(),
                ));
            }
            if !kids.insert(key.kid.as_str()) {
                return Err(invalid(
                    &format!("jwt.keys[{i}].kid"),
                    format!("{:?} is listed twice", key.kid),
                ));
            }
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let c = Config::load(None, no_env).expect("defaults are valid");
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database.url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.jwt.leeway, DEFAULT_LEEWAY);
        assert_eq!(c.jwt.cookie_name, DEFAULT_COOKIE_NAME);
    }

    #[test]
    fn file_then_env_override_defaults() {
        let c = Config::from_yaml(
            Path::new("t.yaml"),
            "server: {listen: '127.0.0.1:7000'}\njwt: {leeway: 10s}\n",
        )
        .expect("parses");
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.jwt.leeway, Duration::from_secs(10));
        let mut c = c;
        c.apply_env(|k| (k == ENV_LISTEN).then(|| "127.0.0.1:7001".to_owned()))
            .expect("env ok");
        assert_eq!(c.server.listen.port(), 7001);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(Config::from_yaml(Path::new("t"), "server: {lisen: x}\n").is_err());
        assert!(Config::from_yaml(Path::new("t"), "colour: blue\n").is_err());
        assert!(Config::from_yaml(Path::new("t"), "jwt: {leeway: soon}\n").is_err());
        let c = Config::from_yaml(Path::new("t"), "jwt: {leeway: 1h}\n").expect("parses");
        assert!(c.validate().is_err());
        let c =
            Config::from_yaml(Path::new("t"), "database: {url: 'mysql://x'}\n").expect("parses");
        assert!(c.validate().is_err());
        let mut c = Config::default();
        assert!(c
            .apply_env(|k| (k == ENV_LISTEN).then(|| "nowhere".to_owned()))
            .is_err());
    }

    #[test]
    fn key_algorithm_is_one_of_the_supported_names() {
        let key =
            |alg: &str| format!("jwt: {{keys: [{{kid: a, algorithm: {alg}, secret_env: X}}]}}\n");
        for (name, expected) in [
            ("HS256", JwtAlgorithm::Hs256),
            ("PS512", JwtAlgorithm::Ps512),
            ("ES384", JwtAlgorithm::Es384),
            ("EdDSA", JwtAlgorithm::EdDsa),
        ] {
            let c = Config::from_yaml(Path::new("t"), &key(name)).expect(name);
            assert_eq!(c.jwt.keys[0].algorithm, expected);
            assert_eq!(expected.as_str(), name);
        }
        for bad in ["none", "hs256", "ES512", "RSA1_5", "''"] {
            let err = Config::from_yaml(Path::new("t"), &key(bad)).expect_err(bad);
            let chain = crate::error_chain(&err);
            assert!(
                chain.contains("jwt.keys[0].algorithm") && chain.contains("unknown variant"),
                "{bad}: {chain}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Secret::new("postgres://user:hunter2@db/x".to_owned());
        assert_eq!(format!("{s:?}"), "**redacted**");
        let c = Config::load(None, |k| {
            (k == ENV_DATABASE_URL).then(|| "postgres://u:hunter2@h/d".to_owned())
        })
        .expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
