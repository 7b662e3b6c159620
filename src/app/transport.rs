//! Transport settings of the gRPC listener (`TCP_NODELAY`, keepalive, HTTP/2 PING timeout) and
//! the shutdown signal: part of the product, kept apart from the composition root.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// How long an HTTP/2 PING may go unanswered before the connection is closed.
pub(super) const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive probe interval on accepted connections: a silently dead Envoy connection is
/// noticed and closed instead of being kept forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Accepted connections with `TCP_NODELAY` and keepalive set. tonic ignores its own
/// `tcp_nodelay` setting for a caller-supplied listener, and without it every small Check
/// response waits for Nagle's algorithm to meet the peer's delayed ACK (about 40 ms).
pub(super) fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(server_side.nodelay().unwrap(), "TCP_NODELAY must be set");
        assert!(socket2::SockRef::from(&server_side).keepalive().unwrap());
        drop(client);
    }
}
