//! What serde cannot check about a parsed config: URL schemes, bounds, names that end up in
//! headers and cookies, duplicate key ids. It runs before any port is bound, and `config check`
//! runs the same code; key material itself is checked by `keyring::load`.

use std::collections::HashSet;
use std::time::Duration;

use super::{Config, ConfigError, Problem};

/// Largest accepted `jwt.leeway`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl Config {
    /// What is allowed but probably a mistake: printed by `config check` (refused with
    /// `--strict`) and logged by `serve`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let has_keys = !self.jwt.keys.is_empty() || self.jwt.jwks_file.is_some();
        if has_keys && self.jwt.issuer.is_none() && self.jwt.audience.is_empty() {
            out.push(
                "jwt: neither issuer nor audience is set, so a token minted by the same keys \
                 for another service is accepted here; set jwt.issuer and jwt.audience"
                    .to_owned(),
            );
        }
        if let Some(login) = &self.login {
            if !login.cookie.secure {
                out.push(
                    "login.cookie.secure is off: the JWT cookie may travel over plain HTTP; \
                     only for tests on loopback"
                        .to_owned(),
                );
            }
            if login.renew_before >= login.token.lifetime {
                out.push(
                    "login.renew_before is not shorter than login.token.lifetime: every cookie \
                     request renews the token; only for tests"
                        .to_owned(),
                );
            }
            for d in &login.redirects.domains {
                out.push(format!(
                    "login.redirects.domains: {d} trusts every host under it, so a page on any \
                     sibling (a third-party or compromised subdomain) can receive sign-in \
                     redirects and send cookie-authenticated writes and sign-outs; list the \
                     apps one by one in login.redirects.origins"
                ));
            }
            if login.accounts.hosted_domain.is_none() && login.accounts.email_domains.is_empty() {
                out.push(
                    "login.accounts: neither hosted_domain nor email_domains is set, so any \
                     account with a verified email at the provider can sign in"
                        .to_owned(),
                );
            }
        }
        out
    }

    /// Checks what serde cannot; key material is checked by `keyring::load`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: Problem| ConfigError::Invalid {
            field: field.to_owned(),
            problem,
        };
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid("database.url", Problem::UnsupportedDatabaseUrl));
        }
        let admin_open_to_all = self
            .server
            .admin_listen
            .is_some_and(|a| !a.ip().is_loopback());
        if admin_open_to_all
            && self.server.admin_token_file.is_none()
            && !self.server.admin_insecure
        {
            return Err(invalid("server.admin_listen", Problem::AdminNeedsToken));
        }
        if self.server.max_concurrent_checks == 0 {
            return Err(invalid(
                "server.max_concurrent_checks",
                Problem::NotPositive,
            ));
        }
        if self.server.http2_keepalive < Duration::from_secs(1) {
            return Err(invalid(
                "server.http2_keepalive",
                Problem::KeepaliveTooShort,
            ));
        }
        for h in &self.forward_credential.hosts {
            if !super::login::is_domain_name(h) {
                return Err(invalid(
                    "forward_credential.hosts",
                    Problem::NotADomain(h.clone()),
                ));
            }
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", Problem::NotPositive));
        }
        if self.database.reload_interval < Duration::from_millis(100) {
            return Err(invalid(
                "database.reload_interval",
                Problem::ReloadTooFrequent,
            ));
        }
        if self
            .database
            .gc_every()
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(invalid("database.gc_interval", Problem::TooShort("1s")));
        }
        if self.jwt.leeway > MAX_LEEWAY {
            return Err(invalid("jwt.leeway", Problem::LeewayTooLong));
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
                Problem::NotACookieName(self.jwt.cookie_name.clone()),
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
                Problem::UnusableTokenHeader(header.clone()),
            ));
        }
        if self.api_tokens.cache_ttl.is_zero() || self.api_tokens.last_used_flush.is_zero() {
            return Err(invalid(
                "api_tokens.cache_ttl",
                Problem::CacheTtlsNotPositive,
            ));
        }
        if self.jwt.cache_capacity == 0 || self.jwt.cache_ttl.is_zero() {
            return Err(invalid("jwt.cache_ttl", Problem::CacheTtlsNotPositive));
        }
        let mut kids = HashSet::new();
        for (i, key) in self.jwt.keys.iter().enumerate() {
            if key.kid.is_empty() {
                return Err(invalid(&format!("jwt.keys[{i}].kid"), Problem::Empty));
            }
            if !kids.insert(key.kid.as_str()) {
                return Err(invalid(
                    &format!("jwt.keys[{i}].kid"),
                    Problem::ListedTwice(key.kid.clone()),
                ));
            }
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", Problem::Empty));
        }
        let decisions = &self.log.decisions;
        if decisions.output.trim().is_empty() {
            return Err(invalid("log.decisions.output", Problem::Empty));
        }
        if !(0.0..=1.0).contains(&decisions.allow_sample) {
            return Err(invalid("log.decisions.allow_sample", Problem::NotAFraction));
        }
        for (i, issuer) in self.jwt.issuers.iter().enumerate() {
            let field = |f: &str| format!("jwt.issuers[{i}].{f}");
            if issuer.issuer.is_empty() {
                return Err(invalid(&field("issuer"), Problem::Empty));
            }
            if !super::is_acceptable_url(&issuer.jwks_url) {
                return Err(invalid(
                    &field("jwks_url"),
                    Problem::NotHttpsUrl(issuer.jwks_url.clone()),
                ));
            }
            if issuer.audience.is_empty() {
                return Err(invalid(&field("audience"), Problem::Empty));
            }
            if issuer.jwks_cooldown < Duration::from_secs(1) {
                return Err(invalid(&field("jwks_cooldown"), Problem::TooShort("1s")));
            }
        }
        if !self.jwt.issuers.is_empty() && self.effective_jwt().issuer.is_none() {
            // The configured keys' tokens are then bound to jwt.issuer explicitly.
            return Err(invalid("jwt.issuer", Problem::Required));
        }
        if let Some(url) = &self.jwt.jwks_url {
            if !super::is_acceptable_url(url) {
                return Err(invalid("jwt.jwks_url", Problem::NotHttpsUrl(url.clone())));
            }
            if self.jwt.issuer.is_none() {
                return Err(invalid("jwt.issuer", Problem::Required));
            }
        }
        if self.server.http_authz_trust_forwarded && self.server.http_authz_listen.is_none() {
            return Err(invalid("server.http_authz_listen", Problem::Required));
        }
        match (&self.login, self.server.http_listen) {
            (Some(login), Some(_)) => {
                login.validate()?;
                if let Some(issuer) = &self.jwt.issuer {
                    if *issuer != login.token.issuer {
                        return Err(invalid(
                            "jwt.issuer",
                            Problem::DiffersFromLogin(issuer.clone(), "issuer"),
                        ));
                    }
                }
                if !self.jwt.audience.is_empty()
                    && !self.jwt.audience.contains(&login.token.audience)
                {
                    return Err(invalid(
                        "jwt.audience",
                        Problem::DiffersFromLogin(self.jwt.audience.join(","), "audience"),
                    ));
                }
            }
            (Some(_), None) => return Err(invalid("server.http_listen", Problem::Required)),
            (None, Some(_)) => return Err(invalid("login", Problem::Required)),
            (None, None) => {}
        }
        Ok(())
    }

    /// The claim rules Check applies: the `jwt` section's, with the login issuer and audience
    /// when `jwt` names none, so the tokens portcullis mints are accepted.
    pub fn effective_jwt(&self) -> super::JwtConfig {
        let mut jwt = self.jwt.clone();
        if let Some(login) = &self.login {
            if jwt.issuer.is_none() {
                jwt.issuer = Some(login.token.issuer.clone());
            }
            if jwt.audience.is_empty() {
                jwt.audience = vec![login.token.audience.clone()];
            }
        }
        jwt
    }

    /// Every outside issuer Check trusts, `jwt.jwks_url` (keys for `jwt.issuer`) included.
    pub fn remote_issuers(&self) -> Vec<super::IssuerConfig> {
        let jwt = self.effective_jwt();
        let mut out = self.jwt.issuers.clone();
        if let (Some(url), Some(issuer)) = (&jwt.jwks_url, &jwt.issuer) {
            out.push(super::IssuerConfig {
                issuer: issuer.clone(),
                jwks_url: url.clone(),
                audience: jwt.audience.clone(),
                jwks_cooldown: super::defaults::DEFAULT_JWKS_COOLDOWN,
                fetch_timeout: super::defaults::DEFAULT_FETCH_TIMEOUT,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests;
