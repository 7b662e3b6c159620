//! The `login` section's checks, run by `config check` and before any port is bound: every
//! URL, domain, key and secret setting it names, each refusal naming its field.

use super::*;

impl LoginConfig {
    pub(in crate::config) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: Problem| ConfigError::Invalid {
            field: format!("login.{field}"),
            problem,
        };
        let url = |field: &str, value: &str| {
            if is_acceptable_url(value) {
                Ok(())
            } else {
                Err(invalid(field, Problem::NotHttpsUrl(value.to_owned())))
            }
        };
        url("public_url", &self.public_url)?;
        url("provider.issuer", &self.provider.issuer)?;
        if let Some(t) = &self.provider.tokeninfo_url {
            url("provider.tokeninfo_url", t)?;
        }
        url("redirects.default", &self.redirects.default)?;
        if self.provider.client_id.trim().is_empty() {
            return Err(invalid("provider.client_id", Problem::Empty));
        }
        if self.provider.client_secret_env.is_some() == self.provider.client_secret_file.is_some() {
            return Err(invalid(
                "provider",
                Problem::ExactlyOne("client_secret_env", "client_secret_file"),
            ));
        }
        if self.state_secret_env.is_some() == self.state_secret_file.is_some() {
            return Err(invalid(
                "",
                Problem::ExactlyOne("state_secret_env", "state_secret_file"),
            ));
        }
        if !self.provider.scopes.iter().any(|s| s == "openid") {
            return Err(invalid("provider.scopes", Problem::MissingOpenidScope));
        }
        if self.provider.jwks_cooldown < Duration::from_secs(1) {
            return Err(invalid("provider.jwks_cooldown", Problem::NotPositive));
        }
        if self.token.issuer.is_empty() {
            return Err(invalid("token.issuer", Problem::Empty));
        }
        if self.token.audience.is_empty() {
            return Err(invalid("token.audience", Problem::Empty));
        }
        if self.token.lifetime < Duration::from_secs(60) {
            return Err(invalid("token.lifetime", Problem::TooShort("1m")));
        }
        if self.session_lifetime < self.token.lifetime {
            return Err(invalid(
                "session_lifetime",
                Problem::TooShort("token.lifetime"),
            ));
        }
        if self.sign_out.remember < Duration::from_secs(60) {
            return Err(invalid("sign_out.remember", Problem::TooShort("1m")));
        }
        match self.signing_keys.first() {
            None => return Err(invalid("signing_keys", Problem::Empty)),
            Some(k) if k.private_key_file.is_none() => {
                return Err(invalid(
                    "signing_keys[0].private_key_file",
                    Problem::Required,
                ))
            }
            Some(_) => {}
        }
        for (i, k) in self.signing_keys.iter().enumerate() {
            if matches!(
                k.algorithm,
                JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512
            ) {
                return Err(invalid(
                    &format!("signing_keys[{i}].algorithm"),
                    Problem::SymmetricPublished,
                ));
            }
        }
        if let Some(d) = &self.cookie.domain {
            if !is_domain_name(d) || !d.contains('.') {
                return Err(invalid("cookie.domain", Problem::NotADomain(d.clone())));
            }
        }
        if let Some(d) = &self.accounts.hosted_domain {
            if !is_domain_name(d) {
                return Err(invalid(
                    "accounts.hosted_domain",
                    Problem::NotADomain(d.clone()),
                ));
            }
        }
        for d in &self.accounts.email_domains {
            if !is_domain_name(d) {
                return Err(invalid(
                    "accounts.email_domains",
                    Problem::NotADomain(d.clone()),
                ));
            }
        }
        for entry in &self.redirects.domains {
            // `host:port` admits that port only (e.g. Envoy's TLS listener on 10443).
            let d = match entry.rsplit_once(':') {
                Some((d, port)) if port.parse::<u16>().is_ok_and(|p| p > 0) => d,
                Some(_) => {
                    return Err(invalid(
                        "redirects.domains",
                        Problem::NotADomain(entry.clone()),
                    ))
                }
                None => entry.as_str(),
            };
            if !is_domain_name(d) || !d.contains('.') {
                return Err(invalid(
                    "redirects.domains",
                    Problem::NotADomain(entry.clone()),
                ));
            }
        }
        for o in &self.redirects.origins {
            let ok = url::Url::parse(o)
                .is_ok_and(|u| is_acceptable_url(o) && u.origin().ascii_serialization() == *o);
            if !ok {
                return Err(invalid(
                    "redirects.origins",
                    Problem::NotAnOrigin(o.clone()),
                ));
            }
        }
        Ok(())
    }
}
