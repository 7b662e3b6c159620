//! A header-echo upstream for `make demo` and the end-to-end tests: answers every request with
//! JSON of its method, path and headers, so you can see what Envoy forwarded after portcullis.
//!
//! `cargo run --example echo_upstream -- 127.0.0.1:8080`

use std::collections::BTreeMap;

use axum::extract::Request;
use axum::Json;
use serde_json::{json, Value};

/// Serves the echo on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, axum::Router::new().fallback(echo)).await
}

async fn echo(request: Request) -> Json<Value> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Json(json!({
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
    }))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("echo upstream listening on {addr}");
    serve(listener).await
}
