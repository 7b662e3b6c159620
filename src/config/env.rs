//! Environment overrides: the `PORTCULLIS_*` variables that beat the file, which beats the
//! defaults. They are read through an injected `env` closure, never from the process directly,
//! so tests set nothing global.

use super::{Config, ConfigError, LogFormat, Secret};

/// Environment variables that override the file (which overrides defaults).
pub const ENV_LISTEN: &str = "PORTCULLIS_LISTEN";
pub const ENV_DATABASE_URL: &str = "PORTCULLIS_DATABASE_URL";
pub const ENV_LOG_LEVEL: &str = "PORTCULLIS_LOG_LEVEL";
pub const ENV_LOG_FORMAT: &str = "PORTCULLIS_LOG_FORMAT";

impl Config {
    pub(super) fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env(ENV_LISTEN) {
            self.server.listen = v.parse().map_err(|_| ConfigError::Env {
                name: ENV_LISTEN,
                value: v.clone(),
                expected: "an address like 127.0.0.1:9001",
            })?;
        }
        if let Some(v) = env(ENV_DATABASE_URL) {
            self.database.url = Secret::new(v);
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
                        value: v.clone(),
                        expected: "text or json",
                    })
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

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
    fn bad_env_values_name_the_variable() {
        let cases = [
            (ENV_LISTEN, "nowhere", "is not an address"),
            (ENV_LOG_FORMAT, "xml", "is not text or json"),
        ];
        for (name, value, expected) in cases {
            let mut c = Config::default();
            let err = c
                .apply_env(|k| (k == name).then(|| value.to_owned()))
                .expect_err(value);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("environment variable {name}: ")),
                "{message}"
            );
            assert!(message.contains(expected), "{message}");
        }
    }
}
