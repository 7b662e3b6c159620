use std::path::Path;

use crate::config::Config;

const VALID: &str = "server: {http_listen: '127.0.0.1:9003'}
login:
  public_url: https://auth.example.com
  provider: {client_id: web.apps.googleusercontent.com, client_secret_env: GOOGLE_SECRET}
  token: {issuer: https://auth.example.com, audience: apps}
  signing_keys: [{public_key_file: k.pub, private_key_file: k.key}]
  cookie: {domain: example.com}
  redirects: {domains: [example.com], default: 'https://app.example.com/'}
  state_secret_env: LOGIN_STATE_SECRET
";

fn load(text: &str) -> Result<Config, String> {
    let c = Config::from_yaml(Path::new("t"), text).map_err(|e| crate::error_chain(&e))?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

#[test]
fn defaults_are_google_es256_and_a_secure_cookie() {
    let c = load(VALID).expect("valid");
    let login = c.login.as_ref().expect("login");
    assert_eq!(login.provider.issuer, super::GOOGLE_ISSUER);
    assert_eq!(
        login.provider.tokeninfo().as_deref(),
        Some(super::GOOGLE_TOKENINFO_URL)
    );
    assert_eq!(
        login.signing_keys[0].algorithm,
        crate::config::JwtAlgorithm::Es256
    );
    assert!(login.cookie.secure);
    assert_eq!(login.token.lifetime, super::DEFAULT_TOKEN_LIFETIME);
    // Check accepts what login mints: the login issuer and audience become the rules.
    let jwt = c.effective_jwt();
    assert_eq!(jwt.issuer.as_deref(), Some("https://auth.example.com"));
    assert_eq!(jwt.audience, vec!["apps".to_owned()]);
}

#[test]
fn an_insecure_cookie_and_open_accounts_are_warned_about() {
    let c = load(VALID).expect("valid");
    let warnings = c.warnings();
    assert!(
        warnings.iter().any(|w| w.starts_with("login.accounts")),
        "{warnings:?}"
    );
    assert!(!warnings.iter().any(|w| w.contains("cookie.secure")));
    let text = VALID
        .replace(
            "cookie: {domain: example.com}",
            "cookie: {domain: example.com, secure: false}",
        )
        .replace(
            "  state_secret_env",
            "  accounts: {hosted_domain: example.com}\n  state_secret_env",
        );
    let warnings = load(&text).expect("valid").warnings();
    assert!(
        warnings.iter().any(|w| w.contains("cookie.secure")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.starts_with("login.accounts")),
        "{warnings:?}"
    );
    assert!(!warnings.iter().any(|w| w.contains("renew_before")));
    let text = VALID.replace(
        "  state_secret_env",
        "  renew_before: 1h\n  state_secret_env",
    );
    let warnings = load(&text).expect("valid").warnings();
    assert!(
        warnings.iter().any(|w| w.starts_with("login.renew_before")),
        "{warnings:?}"
    );
}

#[test]
fn bad_login_settings_are_one_line_errors_naming_the_field() {
    let cases = [
        (
            "public_url: https://auth.example.com",
            "public_url: http://auth.example.com",
            "login.public_url",
        ),
        (
            "client_secret_env: GOOGLE_SECRET}",
            "client_secret_env: GOOGLE_SECRET, scopes: [email]}",
            "must include openid",
        ),
        (
            "client_secret_env: GOOGLE_SECRET}",
            "client_secret_env: A, client_secret_file: f}",
            "client_secret_env and client_secret_file",
        ),
        (
            "state_secret_env: LOGIN_STATE_SECRET",
            "colour: blue",
            "unknown field",
        ),
        ("audience: apps}", "audience: ''}", "login.token.audience"),
        (
            "cookie: {domain: example.com}",
            "cookie: {domain: .example.com}",
            "login.cookie.domain",
        ),
        (
            "domains: [example.com]",
            "domains: [com]",
            "login.redirects.domains",
        ),
        (
            "domains: [example.com]",
            "domains: [example.com], origins: ['https://a.example.com/path']",
            "login.redirects.origins",
        ),
        (
            "[{public_key_file: k.pub, private_key_file: k.key}]",
            "[{public_key_file: k.pub}]",
            "private_key_file",
        ),
        (
            "[{public_key_file: k.pub, private_key_file: k.key}]",
            "[{algorithm: HS256, public_key_file: k.pub, private_key_file: k.key}]",
            "HMAC",
        ),
        (
            "[{public_key_file: k.pub, private_key_file: k.key}]",
            "[]",
            "login.signing_keys",
        ),
        (
            "server: {http_listen: '127.0.0.1:9003'}",
            "server: {}",
            "server.http_listen",
        ),
    ];
    for (from, to, expected) in cases {
        let text = VALID.replacen(from, to, 1);
        assert_ne!(text, VALID, "{from} not found");
        let err = load(&text).expect_err(to);
        assert!(err.contains(expected), "{to}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    let with_other_issuer = format!("{VALID}jwt: {{issuer: https://other.example.com}}\n");
    let err = load(&with_other_issuer).expect_err("issuer");
    assert!(err.contains("jwt.issuer"), "{err}");
}

#[test]
fn sign_out_ends_the_provider_session_and_otherwise_asks_at_the_next_sign_in() {
    let c = load(VALID).expect("valid");
    let s = &c.login.as_ref().expect("login").sign_out;
    assert!(s.end_provider_session);
    assert_eq!(s.prompt, super::SignOutPrompt::SelectAccount);
    assert_eq!(s.remember, super::DEFAULT_SIGNED_OUT_MEMORY);
    let with = |line: &str| {
        load(&VALID.replace(
            "  state_secret_env",
            &format!("  sign_out: {line}\n  state_secret_env"),
        ))
    };
    let c = with("{end_provider_session: false, prompt: login, remember: 1h}").expect("valid");
    let s = &c.login.as_ref().expect("login").sign_out;
    assert!(!s.end_provider_session);
    assert_eq!(s.prompt, super::SignOutPrompt::Login);
    assert_eq!(s.remember, std::time::Duration::from_secs(3600));
    assert!(
        with("{prompt: none}").is_err(),
        "prompt=none would never ask"
    );
    assert!(with("{prompt: consent}").is_err());
    assert!(with("{remember: 10s}")
        .unwrap_err()
        .contains("login.sign_out.remember"));
    assert!(with("{remeber: 1h}").is_err(), "unknown fields are refused");
}
