//! Clients that put requests on the wire as written: HTTP/1.1 over a raw TCP socket (the bytes
//! are sent exactly as given, nothing parsed or normalized), and HTTP/2 with prior knowledge
//! (h2c) through hyper, for pseudo-headers, repeated fields and HPACK-lowercased names.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::corpus_case::{h1_bytes, Case, Ctx, Request, DEFAULT_HOST};

/// Longest a single exchange may take before it counts as "no answer".
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// What came back. `status` 0 means no HTTP response at all (connection closed or stream
/// reset before a status line).
#[derive(Debug, Clone, Default)]
pub struct WireResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Why there was no response, when `status` is 0.
    pub error: Option<String>,
}

impl WireResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn failed(error: impl std::fmt::Display) -> Self {
        WireResponse {
            error: Some(error.to_string()),
            ..Default::default()
        }
    }
}

/// Sends `bytes` on a fresh connection to 127.0.0.1:`port` and reads one HTTP/1.1 response.
pub async fn send_raw_h1(port: u16, bytes: &[u8]) -> WireResponse {
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange_h1(port, bytes)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => WireResponse::failed(e),
        Err(_) => WireResponse::failed("timed out"),
    }
}

async fn exchange_h1(port: u16, bytes: &[u8]) -> std::io::Result<WireResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    // A peer that answers early (400) and closes may make the tail of a write fail; the
    // response, if any, is still readable.
    let _ = stream.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until the head is complete.
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Ok(WireResponse::failed(format!(
                "connection closed after {} bytes without a response head",
                buf.len()
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if let (Some(n), false) = (length, bytes.starts_with(b"HEAD ")) {
        while body.len() < n {
            let got = stream.read(&mut chunk).await.unwrap_or(0);
            if got == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..got]);
        }
        body.truncate(n);
    } else if bytes.starts_with(b"HEAD ") {
        // A response to HEAD has no body, whatever its headers say.
        body.clear();
    } else if chunked {
        while find(&body, b"0\r\n\r\n").is_none() {
            let got = stream.read(&mut chunk).await.unwrap_or(0);
            if got == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..got]);
        }
        body = dechunk(&body);
    } else if status != 204 && status != 304 {
        let _ = stream.read_to_end(&mut body).await;
    }
    Ok(WireResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        error: None,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

/// One HTTP/2 request with prior knowledge to 127.0.0.1:`port`. `uri` is absolute
/// (`http://authority/path`): its authority becomes `:authority`. Header names are sent
/// lower-cased, as HTTP/2 requires; repeated names stay separate fields.
pub async fn send_h2(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(String, String)],
) -> WireResponse {
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange_h2(port, method, uri, headers)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => WireResponse::failed(e),
        Err(_) => WireResponse::failed("timed out"),
    }
}

async fn exchange_h2(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(String, String)],
) -> Result<WireResponse, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => return Ok(WireResponse::failed(format!("{e:?}"))),
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(WireResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        error: None,
    })
}

/// A bypass-corpus case on the wire as written: HTTP/1.1 bytes to `h1_port`, or HTTP/2 (h2c)
/// to `h2_port`. An error when the case cannot be sent as written.
pub async fn send_case(
    case: &Case,
    request: &Request,
    ctx: &Ctx<'_>,
    h1_port: u16,
    h2_port: u16,
) -> Result<WireResponse, String> {
    match case.http.as_str() {
        "1.1" => Ok(send_raw_h1(h1_port, &h1_bytes(case, request, ctx)).await),
        "2" => {
            let host = request.host.as_deref().unwrap_or(DEFAULT_HOST);
            let uri = format!("http://{host}{}", request.target);
            let parsed: hyper::Uri = uri
                .parse()
                .map_err(|e| format!("h2 client cannot send {uri:?}: {e}"))?;
            let sent = parsed.path_and_query().map(|p| p.as_str()).unwrap_or("");
            if sent != request.target {
                return Err(format!(
                    "h2 client would send {sent:?}, not {:?}",
                    request.target
                ));
            }
            Ok(send_h2(h2_port, &request.method, &uri, &request.headers).await)
        }
        other => Err(format!("unknown http version {other:?}")),
    }
}
