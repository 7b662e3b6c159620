//! Recorders for the bypass corpus: an upstream that keeps every request exactly as it arrived
//! (raw request target, `Host`, every header in order), and a tap between Envoy and portcullis
//! that forwards each `Check` and keeps the `CheckRequest` with the `CheckResponse`. Together
//! they show, for every request, what portcullis was asked, what it answered, and what the
//! upstream then received.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head the recorder reads; Envoy's own limit is 60 KiB.
const MAX_HEAD: usize = 256 * 1024;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target exactly as on the request line.
    pub target: String,
    pub version: String,
    /// Header names as sent (Envoy lower-cases them) and values, in order, repeats kept.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// Every value of `name` (compared case-insensitively).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTP/1.1 upstream that records each request and answers 200 with a short JSON body.
#[derive(Clone, Default)]
pub struct RecordingUpstream {
    log: Arc<Mutex<Vec<Received>>>,
}

impl RecordingUpstream {
    /// Binds 127.0.0.1:0 and serves on the current runtime until the test ends.
    pub async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let upstream = RecordingUpstream::default();
        let log = upstream.log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, log).await;
                });
            }
        });
        (upstream, addr)
    }

    /// Everything received since the last `take`.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

async fn serve_connection(
    stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream);
    loop {
        let mut head: Vec<String> = Vec::new();
        let mut total = 0;
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Ok(());
            }
            total += n;
            if total > MAX_HEAD {
                return Ok(());
            }
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if line.is_empty() {
                if head.is_empty() {
                    continue;
                }
                break;
            }
            head.push(line);
        }
        let mut words = head[0].splitn(3, ' ');
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let version = words.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = head[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect();
        let received = Received {
            method,
            target,
            version,
            headers,
        };
        // Drain the body, if any, so the connection stays in step.
        let length = received
            .header_values("content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = received
            .header_values("transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("chunked"));
        if let Some(n) = length {
            let mut body = vec![0; n];
            reader.read_exact(&mut body).await?;
        } else if chunked {
            drain_chunked(&mut reader).await?;
        }
        let body = serde_json::json!({
            "method": received.method,
            "target": received.target,
            "host": received.header_values("host"),
        })
        .to_string();
        log.lock().expect("log").push(received);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
    }
}

async fn drain_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).await?;
        let n =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).await?;
    }
}

/// One `Check` as portcullis saw and answered it.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub request: CheckRequest,
    pub response: CheckResponse,
}

/// What the tap does with the next `Check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapMode {
    /// Forward to portcullis and record.
    #[default]
    Forward,
    /// Answer with a gRPC error (INTERNAL), as a crashing handler would.
    Error,
    /// Answer UNAVAILABLE, as an overloaded or draining server would.
    Unavailable,
    /// Never answer: Envoy's timeout decides.
    Hang,
}

/// An ext_authz server that forwards every `Check` to portcullis and records both sides. It
/// also answers Envoy's gRPC health check for the Authorization service (SERVING once started:
/// start it after portcullis reports SERVING).
#[derive(Clone)]
pub struct AuthzTap {
    log: Arc<Mutex<Vec<Tapped>>>,
    mode: Arc<Mutex<TapMode>>,
}

struct TapService {
    backend: AuthorizationClient<tonic::transport::Channel>,
    log: Arc<Mutex<Vec<Tapped>>>,
    mode: Arc<Mutex<TapMode>>,
}

#[tonic::async_trait]
impl Authorization for TapService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let mode = *self.mode.lock().expect("mode");
        match mode {
            TapMode::Forward => {}
            TapMode::Error => return Err(tonic::Status::internal("corpus: tap error")),
            TapMode::Unavailable => {
                return Err(tonic::Status::unavailable("corpus: tap unavailable"))
            }
            TapMode::Hang => std::future::pending::<()>().await,
        }
        let request = request.into_inner();
        let response = self
            .backend
            .clone()
            .check(request.clone())
            .await?
            .into_inner();
        self.log.lock().expect("log").push(Tapped {
            request,
            response: response.clone(),
        });
        Ok(tonic::Response::new(response))
    }
}

impl AuthzTap {
    /// Starts the tap in front of portcullis at `backend`; returns it and the address Envoy
    /// should call.
    pub async fn start(backend: SocketAddr) -> (Self, SocketAddr) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{backend}"))
            .expect("endpoint")
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to portcullis");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(Mutex::new(TapMode::Forward));
        let service = TapService {
            backend: AuthorizationClient::new(channel),
            log: log.clone(),
            mode: mode.clone(),
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(
                "envoy.service.auth.v3.Authorization",
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("addr");
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(AuthorizationServer::new(service))
                .serve_with_incoming(incoming),
        );
        (AuthzTap { log, mode }, addr)
    }

    /// What the tap does from now on.
    pub fn set_mode(&self, mode: TapMode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Every `Check` since the last `take`.
    pub fn take(&self) -> Vec<Tapped> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}
