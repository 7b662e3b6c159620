//! The admin endpoint's bearer token, through a real `portcullis serve`: `/status` and
//! `/metrics` need `Authorization: Bearer <server.admin_token_file>` (401 with
//! `WWW-Authenticate: Bearer` otherwise), `/live` and `/ready` stay open for probes,
//! `admin_metrics_open` opens `/metrics` only, and an admin listener off loopback without a
//! token is refused before anything starts (exit 64). The token never reaches the log.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{cli, portcullis_bin, request, write_config, Portcullis};

const TOKEN: &str = "admin-token-for-the-admin-endpoint-tests-7f3a";

/// A config whose `server` section also has `server_extra` lines.
fn config_with(dir: &Path, server_extra: &str) -> PathBuf {
    let config = write_config(dir, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  admin_listen: 127.0.0.1:0\n",
        &format!("  admin_listen: 127.0.0.1:0\n{server_extra}"),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn token_file(dir: &Path, token: &str) -> String {
    let path = dir.join("admin-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path.display().to_string()
}

fn admin_port(p: &Portcullis) -> u16 {
    p.admin_addr().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metrics_and_the_bundle_need_the_token_and_probes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), TOKEN);
    let config = config_with(dir.path(), &format!("  admin_token_file: {file}\n"));
    let p = Portcullis::start(&config).await;
    let port = admin_port(&p);
    let right = format!("Bearer {TOKEN}");
    for path in ["/status", "/metrics", "/bundle"] {
        for headers in [
            vec![],
            vec![("authorization", "Bearer not-the-admin-token-at-all-0000")],
            vec![("authorization", TOKEN)],
        ] {
            let r = request(port, "GET", path, &headers).await.unwrap();
            assert_eq!(r.status, 401, "{path} {headers:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{path}");
            assert!(!r.body.contains("policy_version") && !r.body.contains("portcullis_"));
        }
        let r = request(port, "GET", path, &[("authorization", &right)])
            .await
            .unwrap();
        // An HS256 config has no bundle to serve (it would hold the secret): 503, past the
        // token.
        let expected = if path == "/bundle" { 503 } else { 200 };
        assert_eq!(r.status, expected, "{path}: {}", r.body);
    }
    let status = request(port, "GET", "/status", &[("authorization", &right)])
        .await
        .unwrap();
    assert_eq!(status.json()["serving"], true);
    for probe in ["/live", "/ready"] {
        assert_eq!(request(port, "GET", probe, &[]).await.unwrap().status, 200);
    }
    // `portcullis status` sends the configured token.
    let admin = format!("127.0.0.1:{port}");
    let (code, out, err) = cli(&config, &["status", "--admin", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"store_reachable\": true"), "{out}");
    assert!(
        !p.proc.log_text().contains(TOKEN),
        "the token is in the log"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stay_open_only_when_the_operator_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), TOKEN);
    let extra = format!("  admin_token_file: {file}\n  admin_metrics_open: true\n");
    let p = Portcullis::start(&config_with(dir.path(), &extra)).await;
    let port = admin_port(&p);
    let metrics = request(port, "GET", "/metrics", &[]).await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("portcullis_gc_runs_total"),
        "{}",
        metrics.body
    );
    assert_eq!(
        request(port, "GET", "/status", &[]).await.unwrap().status,
        401
    );
}

/// Runs `serve` until it exits (it must, within a bound); its exit code and stderr.
fn serve_must_exit(config: &Path) -> (i32, String) {
    let mut child = Command::new(portcullis_bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve started with a config it must refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let off_loopback = |extra: &str| {
        let config = write_config(dir.path(), "");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "  admin_listen: 127.0.0.1:0\n",
            &format!("  admin_listen: 0.0.0.0:0\n{extra}"),
        );
        std::fs::write(&config, text).unwrap();
        config
    };
    let config = off_loopback("");
    let (code, err) = serve_must_exit(&config);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("server.admin_listen") && err.contains("server.admin_token_file"),
        "{err}"
    );
    let (code, _, err) = cli(&config, &["config", "check"]);
    assert_eq!(code, 64, "{err}");
    let (code, out, err) = cli(
        &off_loopback("  admin_insecure: true\n"),
        &["config", "check"],
    );
    assert_eq!(code, 0, "{out}{err}");

    // A token file that cannot be read, or holds too short a token, is a config error too.
    let missing = dir.path().join("no-such-token").display().to_string();
    let (code, err) = serve_must_exit(&off_loopback(&format!("  admin_token_file: {missing}\n")));
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("server.admin_token_file: cannot read"),
        "{err}"
    );
    let short = token_file(dir.path(), "short");
    let (code, err) = serve_must_exit(&off_loopback(&format!("  admin_token_file: {short}\n")));
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("at least 24 characters") && !err.contains("short\n"),
        "{err}"
    );
}
