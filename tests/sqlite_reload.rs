//! The embedded SQLite store: a change made by another process (the CLI) reaches a running
//! sidecar without waiting for `database.reload_interval`, which these tests set to an hour so
//! that only the watcher (`PRAGMA data_version`) can pass. The `make run`, `token issue`, curl
//! sequence works at once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::{cli, cli_ok, prepared_config, Portcullis};
use tonic::transport::Channel;

/// The HTTP status a Check of `GET /api/v1/roles` with `headers` answers with.
async fn status(client: &mut AuthorizationClient<Channel>, headers: &[(&str, &str)]) -> u16 {
    let request = support::check_request("GET", "app.example.com", "/api/v1/roles", headers);
    support::check_status(client, request).await
}

/// Polls until the sidecar answers `want`; panics after `within` (far below the hour-long
/// reload interval, and far above the watcher's 100 ms, so a slow machine does not flake).
async fn answers(
    client: &mut AuthorizationClient<Channel>,
    headers: &[(&str, &str)],
    want: u16,
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = status(client, headers).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_by_the_cli_works_without_waiting_for_the_reload_interval() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
    let config = prepared_config(dir.path(), &url, "1h", "token");
    let server = Portcullis::start(&config).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AuthorizationClient::new(channel);

    let (code, token, err) = cli(
        &config,
        &["token", "issue", "--service-account", "reporting-bot"],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    let headers = [("x-api-token", token.as_str())];
    answers(
        &mut client,
        &headers,
        200,
        Duration::from_secs(10),
        "issued",
    )
    .await;

    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap()
        .to_owned();
    cli_ok(&config, &["token", "revoke", &id]);
    answers(
        &mut client,
        &headers,
        401,
        Duration::from_secs(10),
        "revoked",
    )
    .await;
    drop(server);
}
