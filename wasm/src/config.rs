//! The filter's configuration (the Wasm plugin's `configuration`, a JSON string): which Envoy
//! cluster serves the bundle, how often to ask, and how old a bundle may get before the filter
//! answers 503. Unknown fields are refused; durations are human strings (`250ms`, `5m`).

use std::time::Duration;

use serde::Deserialize;

/// How often each worker asks the sidecar whether its bundle is current.
pub const DEFAULT_POLL: &str = "250ms";
/// The longest a bundle serves without the sidecar confirming it: a revocation made while the
/// sidecar is unreachable is honoured at the latest this long after.
pub const DEFAULT_MAX_AGE: &str = "5m";
/// How long one bundle request may take.
pub const DEFAULT_TIMEOUT: &str = "2s";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cluster: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default = "default_authority")]
    authority: String,
    #[serde(default)]
    poll: Option<String>,
    #[serde(default)]
    max_age: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

fn default_path() -> String {
    "/bundle".to_owned()
}

fn default_authority() -> String {
    "portcullis".to_owned()
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub poll: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
}

fn duration(field: &str, value: Option<String>, default: &str) -> Result<Duration, String> {
    let text = value.unwrap_or_else(|| default.to_owned());
    let d = humantime::parse_duration(&text).map_err(|e| format!("{field}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{field}: must be more than zero"));
    }
    Ok(d)
}

impl FilterConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("configuration: {e}"))?;
        Ok(FilterConfig {
            cluster: raw.cluster,
            path: raw.path,
            authority: raw.authority,
            poll: duration("poll", raw.poll, DEFAULT_POLL)?,
            max_age: duration("max_age", raw.max_age, DEFAULT_MAX_AGE)?,
            timeout: duration("timeout", raw.timeout, DEFAULT_TIMEOUT)?,
        })
    }
}
