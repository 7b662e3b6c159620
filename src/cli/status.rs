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
    let body = fetch_status(addr).await?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if body["serving"] == true {
        exit::OK
    } else {
        exit::NOT_SERVING
    })
}

/// GETs `/status` from a running portcullis' admin endpoint.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/status")
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .context("timed out")??;
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("not a status document")
}
