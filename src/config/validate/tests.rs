use std::path::Path;

use super::*;

fn parse(text: &str) -> Config {
    Config::from_yaml(Path::new("t"), text).expect(text)
}

#[test]
fn unknown_fields_and_unparsable_values_are_parse_errors() {
    for text in [
        "server: {lisen: x}\n",
        "colour: blue\n",
        "jwt: {leeway: soon}\n",
    ] {
        let err = Config::from_yaml(Path::new("t"), text).expect_err(text);
        assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err:?}");
    }
}

#[test]
fn values_serde_accepts_but_the_service_cannot_use_are_refused() {
    let cases = [
        ("jwt: {leeway: 1h}\n", "jwt.leeway: must be at most 5m"),
        (
            "server: {http_authz_trust_forwarded: true}\n",
            "server.http_authz_listen",
        ),
        (
            "database: {url: 'mysql://x'}\n",
            "database.url: must start with",
        ),
        (
            "database: {max_connections: 0}\n",
            "database.max_connections",
        ),
        (
            "database: {reload_interval: 10ms}\n",
            "database.reload_interval",
        ),
        ("jwt: {cookie_name: 'a b'}\n", "jwt.cookie_name"),
        (
            "forward_credential: {hosts: ['Relay.example.com:443']}\n",
            "forward_credential.hosts",
        ),
        ("api_tokens: {header: authorization}\n", "api_tokens.header"),
        ("api_tokens: {header: x-auth-user}\n", "api_tokens.header"),
        (
            "api_tokens: {last_used_flush: 0s}\n",
            "api_tokens.cache_ttl",
        ),
        ("jwt: {cache_capacity: 0}\n", "jwt.cache_ttl"),
        (
            "jwt: {keys: [{kid: a, algorithm: HS256}, {kid: a, algorithm: HS256}]}\n",
            "jwt.keys[1].kid: \"a\" is listed twice",
        ),
        (
            "jwt: {keys: [{kid: '', algorithm: HS256}]}\n",
            "jwt.keys[0].kid",
        ),
        ("log: {level: ' '}\n", "log.level: must not be empty"),
        (
            "server: {admin_listen: '0.0.0.0:9002'}\n",
            "server.admin_listen: is not a loopback address: set server.admin_token_file",
        ),
        (
            "server: {admin_listen: '[::]:9002', admin_metrics_open: true}\n",
            "server.admin_listen: is not a loopback address",
        ),
        (
            "database: {gc_interval: 500ms}\n",
            "database.gc_interval: must be at least 1s",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(text).validate().expect_err(text);
        assert!(
            matches!(err, ConfigError::Invalid { .. }),
            "{text}: {err:?}"
        );
        assert!(err.to_string().starts_with(expected), "{text}: {err}");
    }
    parse("").validate().expect("the defaults are valid");
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_or_an_explicit_opt_out() {
    for ok in [
        "server: {admin_listen: '127.0.0.1:9002'}\n",
        "server: {admin_listen: '[::1]:9002'}\n",
        "server: {admin_listen: null}\n",
        "server: {admin_listen: '0.0.0.0:9002', admin_token_file: /run/t}\n",
        "server: {admin_listen: '0.0.0.0:9002', admin_insecure: true}\n",
    ] {
        parse(ok).validate().expect(ok);
    }
}

#[test]
fn housekeeping_runs_hourly_unless_zero_or_null() {
    let every = |text: &str| parse(text).database.gc_every();
    assert_eq!(every(""), Some(super::super::DEFAULT_GC_INTERVAL));
    assert_eq!(
        every("database: {gc_interval: 10m}\n"),
        Some(Duration::from_secs(600))
    );
    assert_eq!(every("database: {gc_interval: 0}\n"), None);
    assert_eq!(every("database: {gc_interval: null}\n"), None);
}

/// Outside issuers (`jwt.issuers`).
mod issuers {
    use std::path::Path;

    use super::super::*;

    fn check(text: &str) -> Result<Config, String> {
        let c = Config::from_yaml(Path::new("t"), text).map_err(|e| crate::error_chain(&e))?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn outside_issuers_need_an_https_jwks_url_an_audience_and_a_pinned_own_issuer() {
        let good = "jwt:
  issuer: https://auth.example.com
  issuers:
    - {issuer: https://idp.example.com, jwks_url: https://idp.example.com/jwks, audience: [portcullis]}
";
        let c = check(good).expect("valid");
        let remote = c.remote_issuers();
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].jwks_cooldown, Duration::from_secs(30));
        for (from, to, expected) in [
            (
                "audience: [portcullis]",
                "audience: []",
                "jwt.issuers[0].audience",
            ),
            (
                "jwks_url: https://idp.example.com/jwks",
                "jwks_url: http://idp.example.com/jwks",
                "jwt.issuers[0].jwks_url",
            ),
            (
                "  issuer: https://auth.example.com\n",
                "",
                "jwt.issuer: is required",
            ),
            (
                "audience: [portcullis]}",
                "audience: [p], jwks_cooldown: 0s}",
                "jwks_cooldown",
            ),
        ] {
            let text = good.replacen(from, to, 1);
            assert_ne!(text, good, "{from}");
            let err = check(&text).expect_err(to);
            assert!(err.contains(expected), "{to}: {err}");
        }
        // jwt.jwks_url: keys for jwt.issuer, with jwt.audience.
        let c = check(
            "jwt: {issuer: https://idp.example.com, audience: [p], jwks_url: https://idp.example.com/jwks}\n",
        )
        .expect("valid");
        let remote = c.remote_issuers();
        assert_eq!(remote[0].issuer, "https://idp.example.com");
        assert_eq!(remote[0].audience, vec!["p".to_owned()]);
        let err = check("jwt: {jwks_url: https://idp.example.com/jwks}\n").expect_err("no issuer");
        assert!(err.contains("jwt.issuer"), "{err}");
    }
}
