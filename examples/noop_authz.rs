//! A no-op ext_authz server: allows every `Check` at once, without reading it. Bench-only: it is
//! the ceiling of the ext_authz protocol on a machine (gRPC, HTTP/2 and Envoy's filter cost with
//! no decision at all), the comparator `make load` runs portcullis against. Accepted sockets get
//! `TCP_NODELAY`, as portcullis's do; gRPC health reports SERVING for
//! `envoy.service.auth.v3.Authorization`, so the same Envoy cluster config (health checks
//! included) fronts either server.
//!
//! `cargo run --release --example noop_authz -- 127.0.0.1:9101` (port 0: any free port; the
//! bound address is printed on stderr as `listening on ADDR`).

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct Noop;

#[tonic::async_trait]
impl Authorization for Noop {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::Ok as i32,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "envoy.service.auth.v3.Authorization",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(Noop))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
