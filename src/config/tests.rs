/// sqlx's pool lines at info are off whatever `log.level` says (unless it names sqlx),
/// while portcullis's own stay as configured.
#[test]
fn sqlx_info_lines_are_filtered_out_unless_asked_for() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let enabled = |level: &str, target_is_sqlx: bool| {
        let config = LogConfig {
            level: level.to_owned(),
            ..LogConfig::default()
        };
        let filter = tracing_subscriber::EnvFilter::try_new(config.filter()).unwrap();
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            if target_is_sqlx {
                tracing::enabled!(target: "sqlx_core::pool::inner", tracing::Level::INFO)
            } else {
                tracing::enabled!(target: "portcullis::app::health", tracing::Level::INFO)
            }
        })
    };
    for level in ["info", "debug", "info,portcullis=debug", ""] {
        assert!(!enabled(level, true), "sqlx info under {level:?}");
    }
    assert!(enabled("info", false));
    assert!(enabled("info,portcullis=debug", false));
    assert!(enabled("info,sqlx=info", true), "asked for");
}

use super::*;

#[test]
fn key_algorithm_is_one_of_the_supported_names() {
    let key = |alg: &str| format!("jwt: {{keys: [{{kid: a, algorithm: {alg}, secret_env: X}}]}}\n");
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
