//! `portcullis status`: asks a running portcullis' admin endpoint for its snapshot version,
//! age and store reachability.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use super::exit;
use crate::config::Config;

pub(super) async fn status_command(
    admin: Option<SocketAddr>,
    config: &Config,
) -> anyhow::Result<u8> {
    let addr = admin
        .or(config.server.admin_listen)
        .context("no admin address: pass --admin")?;
    let token = crate::keyring::load_admin_token(&config.server)?;
    let body = fetch_status_with(addr, token.as_ref().map(|t| t.expose().as_str())).await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if body["serving"] == true {
        exit::OK
    } else {
        exit::NOT_SERVING
    })
}

/// GETs `/status` from a running portcullis' admin endpoint.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    fetch_status_with(addr, None).await
}

/// GETs `/status`, with the admin bearer token when there is one.
pub async fn fetch_status_with(
    addr: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut request = hyper::Request::get("/status").header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .context("timed out")??;
    if response.status() == hyper::StatusCode::UNAUTHORIZED {
        anyhow::bail!("{addr} refused: /status needs the token in server.admin_token_file");
    }
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("not a status document")
}
