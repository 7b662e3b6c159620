//! Keyring tests: configured keys are read from files and the environment, every source is
//! held to identity's strength rules, and each refusal names the key and where it came from.

use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use super::*;
use crate::identity::KeyError;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

fn key_config(kid: &str, alg: JwtAlgorithm, public: Option<&str>) -> KeyConfig {
    KeyConfig {
        kid: kid.to_owned(),
        algorithm: alg,
        secret_env: public.is_none().then(|| "TEST_SECRET".to_owned()),
        secret_file: None,
        public_key_file: public.map(data),
        private_key_file: None,
    }
}

fn config(keys: Vec<KeyConfig>) -> JwtConfig {
    JwtConfig {
        keys,
        ..JwtConfig::default()
    }
}

fn test_env(name: &str) -> Option<String> {
    (name == "TEST_SECRET").then(|| SECRET.to_owned())
}

#[test]
fn loads_every_key_type_from_files_and_the_environment() {
    let secret_file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(secret_file.path(), format!("{SECRET}\r\n")).expect("write");
    let cfg = config(vec![
        key_config("hs", JwtAlgorithm::Hs256, None),
        KeyConfig {
            secret_env: None,
            secret_file: Some(secret_file.path().to_owned()),
            ..key_config("hs-file", JwtAlgorithm::Hs512, None)
        },
        key_config("rs", JwtAlgorithm::Rs256, Some("keys/rs256.pub.pem")),
        key_config("ps", JwtAlgorithm::Ps256, Some("keys/rs256.pkcs1.pub.pem")),
        key_config("es", JwtAlgorithm::Es256, Some("keys/es256.pub.pem")),
        key_config("es384", JwtAlgorithm::Es384, Some("keys/p384.pub.pem")),
        key_config("ed", JwtAlgorithm::EdDsa, Some("keys/ed25519.pub.pem")),
    ]);
    // HS512 needs 64 bytes; the file's secret (newline stripped) has 42.
    let err = load(&cfg, test_env).expect_err("short secret file");
    assert!(
        matches!(
            &err,
            KeyringError::Refused { kid, source: KeyError::HmacSecretTooShort { len: 42, min: 64, .. }, .. }
                if kid == "hs-file"
        ),
        "{err}"
    );
    let cfg = JwtConfig {
        keys: cfg
            .keys
            .into_iter()
            .filter(|k| k.kid != "hs-file")
            .collect(),
        ..cfg
    };
    let keys = load(&cfg, test_env).expect("loads");
    assert_eq!(keys.len(), 6);
    for (kid, alg) in [
        ("hs", Algorithm::HS256),
        ("rs", Algorithm::RS256),
        ("ps", Algorithm::PS256),
        ("es", Algorithm::ES256),
        ("es384", Algorithm::ES384),
        ("ed", Algorithm::EdDSA),
    ] {
        assert_eq!(keys.get(kid).map(|k| k.algorithm), Some(alg), "{kid}");
    }
}

#[test]
fn bad_key_configuration_is_reported() {
    use JwtAlgorithm::*;
    let cases: Vec<(KeyConfig, &str)> = vec![
        (
            key_config("k", Rs256, Some("keys/es256.pub.pem")),
            r#"key "k" ("#,
        ),
        (
            key_config("k", Rs256, Some("keys/es256.pub.pem")),
            "es256.pub.pem): not a RS256 key (an EC key on P-256)",
        ),
        (
            key_config("k", Rs256, Some("keys/missing.pem")),
            r#"key "k": cannot read"#,
        ),
        (
            KeyConfig {
                secret_env: Some("UNSET_VARIABLE".to_owned()),
                ..key_config("k", Hs256, None)
            },
            "UNSET_VARIABLE is not set",
        ),
        (
            KeyConfig {
                secret_env: None,
                ..key_config("k", Hs256, None)
            },
            "exactly one",
        ),
        (
            KeyConfig {
                secret_file: Some(data("keys/hs256.secret")),
                ..key_config("k", Hs256, None)
            },
            "exactly one",
        ),
        (
            KeyConfig {
                public_key_file: Some(data("keys/rs256.pub.pem")),
                ..key_config("k", Hs256, None)
            },
            "HMAC keys take secret_env or secret_file",
        ),
        (
            KeyConfig {
                public_key_file: None,
                ..key_config("k", Es256, Some("keys/es256.pub.pem"))
            },
            "public_key_file is required",
        ),
        (
            KeyConfig {
                secret_env: Some("TEST_SECRET".to_owned()),
                ..key_config("k", EdDsa, Some("keys/ed25519.pub.pem"))
            },
            "EdDSA keys take public_key_file, not a secret",
        ),
        (
            key_config("k", Rs256, Some("keys/rsa1024.pub.pem")),
            "rsa1024.pub.pem): the RSA modulus has 1024 bits, fewer than the 2048 required",
        ),
        (
            key_config("k", Rs256, Some("keys/roca.pub.pem")),
            "roca.pub.pem): the RSA modulus has the ROCA fingerprint",
        ),
        (
            key_config("k", Es256, Some("keys/p384.pub.pem")),
            "p384.pub.pem): a P-384 key does not fit ES256",
        ),
        (
            KeyConfig {
                private_key_file: Some(data("keys/rsa1024.key.pem")),
                ..key_config("k", Rs256, Some("keys/rs256.pub.pem"))
            },
            "rsa1024.key.pem): the RSA modulus has 1024 bits",
        ),
    ];
    for (kc, expected) in cases {
        let err = load(&config(vec![kc]), test_env).expect_err(expected);
        let line = crate::error_chain(&err);
        assert!(line.contains(expected), "{line} vs {expected}");
        assert!(!line.contains(SECRET));
    }
    let short = |_: &str| Some("short".to_owned());
    let err = load(&config(vec![key_config("k", Hs256, None)]), short).expect_err("short");
    assert_eq!(
        crate::error_chain(&err),
        r#"key "k" (secret_env TEST_SECRET): the HMAC secret has 5 bytes, shorter than the 32 HS256 needs"#
    );
    let two = config(vec![
        key_config("k", Hs256, None),
        key_config("k", Hs256, None),
    ]);
    assert!(matches!(
        load(&two, test_env),
        Err(KeyringError::KeySet(KeyError::DuplicateKid { .. }))
    ));
}

/// Issue 8, hole 4: a 1024-bit RSA public key in `public_key_file` used to load ("config ok").
/// It is refused at start-up, by the rule JWKS keys already had.
#[test]
fn rsa_1024_public_key_file_is_refused() {
    let cfg = config(vec![key_config(
        "weak",
        JwtAlgorithm::Rs256,
        Some("keys/rsa1024.pub.pem"),
    )]);
    let err = load(&cfg, test_env).expect_err("1024-bit key refused");
    match &err {
        KeyringError::Refused {
            kid,
            origin,
            source: KeyError::RsaKeyTooShort { bits: 1024 },
        } => {
            assert_eq!(kid, "weak");
            assert!(origin.ends_with("rsa1024.pub.pem"), "{origin}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn jwks_file_from_config_verifies_its_tokens() {
    // The Wycheproof ES256 public key and its valid JWS, served from a JWKS file.
    let text =
        std::fs::read_to_string(data("wycheproof/json_web_signature_test.json")).expect("vectors");
    let vectors: Value = serde_json::from_str(&text).expect("json");
    let group = vectors["testGroups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["comment"] == "es256")
        .expect("es256 group");
    let jws = group["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .find(|t| t["result"] == "valid")
        .expect("valid")["jws"]
        .as_str()
        .expect("compact")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys": [group["public"]]}).to_string()).expect("write");
    let cfg = JwtConfig {
        jwks_file: Some(path.clone()),
        ..config(vec![key_config("hs", JwtAlgorithm::Hs256, None)])
    };
    let keys = load(&cfg, test_env).expect("jwks loads");
    assert_eq!(keys.len(), 2);
    assert!(keys.verify_signature(&jws).is_ok());
    // A JWKS file that is not one is a configuration error naming the file.
    std::fs::write(&path, "{\"keys\": 3}").expect("write");
    let err = load(&cfg, test_env).expect_err("bad jwks");
    assert!(
        matches!(
            &err,
            KeyringError::Jwks {
                source: JwkSetError::NotJwks { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(crate::error_chain(&err).contains("jwks.json"), "{err}");
    // A kid in both the config and the JWKS file is refused.
    let mut public = group["public"].clone();
    public["kid"] = json!("hs");
    std::fs::write(&path, json!({"keys": [public]}).to_string()).expect("write");
    let err = load(&cfg, test_env).expect_err("duplicate kid");
    assert!(
        matches!(&err, KeyringError::KeySet(KeyError::DuplicateKid { kid }) if kid == "hs"),
        "{err}"
    );
    let missing = JwtConfig {
        jwks_file: Some(dir.path().join("absent.json")),
        ..cfg
    };
    let err = load(&missing, test_env).expect_err("absent");
    assert!(matches!(err, KeyringError::ReadJwks { .. }), "{err}");
}

#[test]
fn signing_key_mints_tokens_its_set_verifies() {
    let cfg = JwtConfig {
        signing_key: Some("rs".to_owned()),
        ..config(vec![
            key_config("hs", JwtAlgorithm::Hs256, None),
            KeyConfig {
                private_key_file: Some(data("keys/rs256.key.pem")),
                ..key_config("rs", JwtAlgorithm::Rs256, Some("keys/rs256.pub.pem"))
            },
        ])
    };
    let keys = load(&cfg, test_env).expect("loads");
    let token = keys.mint(&json!({"sub": "1"})).expect("mints");
    let (_, key) = keys.verify_signature(&token).expect("verifies");
    assert_eq!((key.kid.as_str(), key.algorithm), ("rs", Algorithm::RS256));
    // Naming a key without a private key is refused at load.
    let cfg = JwtConfig {
        signing_key: Some("rs".to_owned()),
        ..config(vec![key_config(
            "rs",
            JwtAlgorithm::Rs256,
            Some("keys/rs256.pub.pem"),
        )])
    };
    assert!(matches!(
        load(&cfg, test_env),
        Err(KeyringError::KeySet(KeyError::NoSigningKey { .. }))
    ));
}

#[test]
fn every_configured_algorithm_is_the_jsonwebtoken_one_of_that_name() {
    use JwtAlgorithm::*;
    for alg in [
        Hs256, Hs384, Hs512, Rs256, Rs384, Rs512, Ps256, Ps384, Ps512, Es256, Es384, EdDsa,
    ] {
        assert_eq!(format!("{:?}", algorithm(alg)), alg.as_str());
        assert_eq!(is_hmac(alg), alg.as_str().starts_with("HS"));
    }
}

#[test]
fn settings_carry_the_config_values() {
    assert_eq!(
        ApiTokenSettings::from(&ApiTokenConfig::default()),
        ApiTokenSettings::default(),
        "identity's defaults are the config's"
    );
    let jwt = JwtConfig {
        issuer: Some("iss".to_owned()),
        audience: vec!["aud".to_owned()],
        ..JwtConfig::default()
    };
    let s = JwtSettings::from(&jwt);
    assert_eq!(s.rules.issuer.as_deref(), Some("iss"));
    assert_eq!(s.rules.audience, ["aud"]);
    assert_eq!(s.rules.leeway, jwt.leeway);
    assert_eq!(s.cookie_name, jwt.cookie_name);
    assert_eq!(
        (s.cache_ttl, s.cache_capacity),
        (jwt.cache_ttl, jwt.cache_capacity)
    );
}

#[test]
fn login_material_never_prints_its_secrets() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys");
    let text = format!(
        "server: {{http_listen: '127.0.0.1:9003'}}
login:
  public_url: https://auth.example.com
  provider: {{client_id: web, client_secret_env: CLIENT_SECRET}}
  token: {{issuer: https://auth.example.com, audience: apps}}
  signing_keys: [{{public_key_file: {k}/es256.pub.pem, private_key_file: {k}/es256.key.pem}}]
  redirects: {{domains: [example.com], default: 'https://app.example.com/'}}
  state_secret_file: {d}/state
",
        k = keys.display(),
        d = dir.path().display()
    );
    std::fs::write(
        dir.path().join("state"),
        "state-secret-hunter2-0123456789abcdef\n",
    )
    .expect("w");
    let config =
        crate::config::Config::from_yaml(std::path::Path::new("t"), &text).expect("parses");
    let login = config.login.as_ref().expect("login");
    let env = |k: &str| (k == "CLIENT_SECRET").then(|| "client-hunter2".to_owned());
    let material = super::load_login(login, env).expect("loads");
    assert_eq!(material.client_secret, "client-hunter2");
    assert_eq!(material.keys.published.len(), 1);
    let printed = format!("{material:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    // A short state secret is refused.
    std::fs::write(dir.path().join("state"), "short\n").expect("w");
    let err = super::load_login(login, env).expect_err("short");
    assert!(err.to_string().contains("at least 32"), "{err}");
    // An unset client-secret variable is named.
    let err = super::load_login(login, |_| None).expect_err("unset");
    assert!(err.to_string().contains("CLIENT_SECRET"), "{err}");
}
