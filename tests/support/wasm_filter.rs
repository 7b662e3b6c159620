//! The in-process mode under test: real Envoy running the shipped `envoy/envoy-wasm.yaml` with
//! the filter `make wasm` built, fed by a running portcullis's admin endpoint, and a portcullis
//! configuration whose keys can travel in the bundle (RS256 signing, ES256 verifying: no
//! shared secret).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::corpus_case::key_file;
use crate::support::{self, root, Envoy, Portcullis};

/// The filter as `make wasm` builds it.
pub fn wasm_file() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let file = target.join("wasm32-wasip1/wasm/portcullis_wasm.wasm");
    assert!(
        file.is_file(),
        "{} is missing: run `make wasm` (make test builds it before the tests)",
        file.display()
    );
    file
}

/// A portcullis config in `dir` on a fresh SQLite database, migrated, with the example policy:
/// RS256 keys portcullis mints with and an ES256 key it verifies, `extra` appended.
pub fn write_bundle_config(dir: &Path, extra: &str) -> PathBuf {
    let config = format!(
        r#"server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  shutdown_grace: 5s
database:
  url: "sqlite://{db}"
  reload_interval: 100ms
jwt:
  issuer: {issuer}
  audience: [{audience}]
  keys:
    - {{kid: test-rs256, algorithm: RS256, public_key_file: "{rs}", private_key_file: "{rs_key}"}}
    - {{kid: test-es256, algorithm: ES256, public_key_file: "{es}"}}
  signing_key: test-rs256
  permissions_from: token
api_tokens:
  last_used_flush: 200ms
log:
  level: info
{extra}"#,
        db = dir.join("portcullis.db").display(),
        issuer = "portcullis-test",
        audience = "portcullis",
        rs = key_file("rs256.pub.pem").display(),
        rs_key = key_file("rs256.key.pem").display(),
        es = key_file("es256.pub.pem").display(),
    );
    let path = dir.join("portcullis.yaml");
    std::fs::write(&path, config).expect("config");
    support::cli_ok(&path, &["migrate"]);
    let policy = root().join("examples/policy.yaml");
    support::cli_ok(&path, &["policy", "apply", policy.to_str().expect("utf-8")]);
    path
}

/// Where a running portcullis serves its admin endpoint (and the bundle).
pub fn admin_addr(portcullis: &Portcullis) -> SocketAddr {
    let line = portcullis.proc.wait_for_log("serving admin endpoint");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("admin_addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin_addr in {line:?}"))
}

/// Envoy running `envoy/envoy-wasm.yaml`, its bundle cluster on `admin`, its upstream on
/// `upstream`; `max_age` replaces the shipped maximum bundle age when given.
pub async fn start_wasm_envoy(
    admin: SocketAddr,
    upstream: SocketAddr,
    max_age: Option<&str>,
) -> Envoy {
    let file = "envoy/envoy-wasm.yaml";
    let mut yaml = std::fs::read_to_string(root().join(file)).expect(file);
    for (from, to) in [
        (9002, admin.port()),
        (8080, upstream.port()),
        (9901, 0),
        (10000, 0),
    ] {
        let original = format!("port_value: {from}");
        assert!(yaml.contains(&original), "{file}: no {original}");
        yaml = yaml.replace(&original, &format!("port_value: {to}"));
    }
    let shipped = "filename: target/wasm32-wasip1/wasm/portcullis_wasm.wasm";
    assert!(yaml.contains(shipped), "{file}: no {shipped}");
    yaml = yaml.replace(shipped, &format!("filename: {}", wasm_file().display()));
    if let Some(age) = max_age {
        let shipped = r#""max_age": "5m""#;
        assert!(yaml.contains(shipped), "{file}: no {shipped}");
        yaml = yaml.replace(shipped, &format!(r#""max_age": "{age}""#));
    }
    Envoy::start_yaml(&yaml).await
}

/// Waits until the filter decides (anything but its no-bundle 503), failing after a bound.
pub async fn wait_for_bundle(envoy: &Envoy) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = envoy.get("/healthz", &[]).await;
        if r.status != 503 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the filter never got a bundle:\n{}",
            envoy.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
