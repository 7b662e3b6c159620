//! Every default of the configuration tree: one named const per value, the functions serde
//! calls for a missing field, and the `Default` impls, all built from the same consts, so a
//! missing section and a section with every field missing mean the same thing.

use std::net::SocketAddr;
use std::time::Duration;

use super::{
    ApiTokenConfig, DatabaseConfig, DecisionLogConfig, JwtConfig, LogConfig, LogFormat,
    PermissionSource, Secret, ServerConfig, SubjectClaim,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9002";
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
pub const DEFAULT_MAX_CONCURRENT_CHECKS: usize = 1024;
pub const DEFAULT_HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);

pub const DEFAULT_DATABASE_URL: &str = "sqlite://portcullis.db";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 5;
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// How often each sidecar runs a housekeeping round.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(3600);

pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_COOKIE_NAME: &str = "jwt-token";
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 100_000;
/// Lifetime of a token `jwt mint` signs when none is asked for.
pub const DEFAULT_MINT_TTL: Duration = Duration::from_secs(3600);

pub const DEFAULT_API_TOKEN_HEADER: &str = "x-api-token";
pub const DEFAULT_API_TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);
pub const DEFAULT_LAST_USED_FLUSH: Duration = Duration::from_secs(10);

pub const DEFAULT_LOG_LEVEL: &str = "info";

// What serde fills in for a missing field (`#[serde(default = "defaults::…")]`).

pub(super) fn listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9001)))
}
pub(super) fn admin_listen() -> Option<SocketAddr> {
    DEFAULT_ADMIN_LISTEN.parse().ok()
}
pub(super) fn shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}
pub(super) fn max_concurrent_checks() -> usize {
    DEFAULT_MAX_CONCURRENT_CHECKS
}
pub(super) fn http2_keepalive() -> Duration {
    DEFAULT_HTTP2_KEEPALIVE
}
pub(super) fn database_url() -> Secret<String> {
    Secret::new(DEFAULT_DATABASE_URL.to_owned())
}
pub(super) fn max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
pub(super) fn reload_interval() -> Duration {
    DEFAULT_RELOAD_INTERVAL
}
pub(super) fn gc_interval() -> Option<Duration> {
    Some(DEFAULT_GC_INTERVAL)
}
pub(super) fn leeway() -> Duration {
    DEFAULT_LEEWAY
}
pub(super) fn cookie_name() -> String {
    DEFAULT_COOKIE_NAME.to_owned()
}
pub(super) fn token_cache_ttl() -> Duration {
    DEFAULT_TOKEN_CACHE_TTL
}
pub(super) fn token_cache_capacity() -> u64 {
    DEFAULT_TOKEN_CACHE_CAPACITY
}
pub(super) fn api_token_header() -> String {
    DEFAULT_API_TOKEN_HEADER.to_owned()
}
pub(super) fn api_token_cache_ttl() -> Duration {
    DEFAULT_API_TOKEN_CACHE_TTL
}
pub(super) fn last_used_flush() -> Duration {
    DEFAULT_LAST_USED_FLUSH
}
/// Least time between two JWKS fetches an unknown `kid` causes.
pub const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);
/// Timeout of one JWKS fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn jwks_cooldown() -> Duration {
    DEFAULT_JWKS_COOLDOWN
}

pub(super) fn fetch_timeout() -> Duration {
    DEFAULT_FETCH_TIMEOUT
}

pub(super) fn log_level() -> String {
    DEFAULT_LOG_LEVEL.to_owned()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: listen(),
            admin_listen: admin_listen(),
            admin_token_file: None,
            admin_metrics_open: false,
            admin_insecure: false,
            http_listen: None,
            http_authz_listen: None,
            http_authz_trust_forwarded: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_concurrent_checks: DEFAULT_MAX_CONCURRENT_CHECKS,
            http2_keepalive: DEFAULT_HTTP2_KEEPALIVE,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: database_url(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            gc_interval: gc_interval(),
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: None,
            audience: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            cookie_name: cookie_name(),
            keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            issuers: Vec::new(),
            signing_key: None,
            permissions_from: PermissionSource::Token,
            subject_claim: SubjectClaim::Sub,
            cache_ttl: DEFAULT_TOKEN_CACHE_TTL,
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
        }
    }
}

impl Default for ApiTokenConfig {
    fn default() -> Self {
        ApiTokenConfig {
            header: api_token_header(),
            cache_ttl: DEFAULT_API_TOKEN_CACHE_TTL,
            last_used_flush: DEFAULT_LAST_USED_FLUSH,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: log_level(),
            decisions: DecisionLogConfig::default(),
        }
    }
}

pub(super) fn decision_log_output() -> String {
    "off".to_owned()
}

pub(super) fn decision_log_allow_sample() -> f64 {
    1.0
}

pub(super) fn decision_log_deny_limit() -> u32 {
    100
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            output: decision_log_output(),
            allow_sample: decision_log_allow_sample(),
            deny_limit_per_second: decision_log_deny_limit(),
            include_query: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_are_the_named_constants() {
        let c = Config::load(None, |_| None).expect("defaults are valid");
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database.url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.jwt.leeway, DEFAULT_LEEWAY);
        assert_eq!(c.jwt.cookie_name, DEFAULT_COOKIE_NAME);
    }

    #[test]
    fn empty_sections_and_missing_sections_agree() {
        let text = "server: {}\ndatabase: {}\njwt: {}\napi_tokens: {}\nlog: {}\n";
        let filled = Config::from_yaml(Path::new("t"), text).expect("parses");
        let default = Config::default();
        assert_eq!(format!("{filled:?}"), format!("{default:?}"));
        assert_eq!(default.log.level, DEFAULT_LOG_LEVEL);
        assert_eq!(default.api_tokens.header, DEFAULT_API_TOKEN_HEADER);
        assert_eq!(
            default
                .server
                .admin_listen
                .map(|a| a.to_string())
                .as_deref(),
            Some(DEFAULT_ADMIN_LISTEN)
        );
    }
}
