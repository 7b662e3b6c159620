//! The Envoy edge: `envoy.service.auth.v3.Authorization/Check`. Converts a `CheckRequest` into
//! an `AccessRequest`, asks the [`CheckService`], and renders its [`Verdict`] as a
//! `CheckResponse`. Check always answers with a `CheckResponse`; it never returns a gRPC error
//! (Envoy would then apply its failure mode instead of our decision). An allow's identity
//! headers and metadata are encoded once per caller and snapshot and their bytes reused
//! (`server::Answer`, `Identity::encoded`).

mod convert;
mod server;

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use prost::Message;

use crate::check::CheckService;

pub use convert::{access_request, check_response};
pub use server::{Answer, AuthorizationService, CHECK_PATH};

/// Decides one request, as the server sends it: an allow's identity part comes encoded (once
/// per caller and snapshot), the rest is built for this request.
pub async fn answer(service: &CheckService, request: &CheckRequest) -> Answer {
    let access = convert::access_request(request);
    convert::answer(service.check(&access).await)
}

/// Decides one request; the answer as the client decodes it (tests, the fuzz target, anything
/// without a gRPC client). The bytes are the server's own.
pub async fn decide(service: &CheckService, request: &CheckRequest) -> CheckResponse {
    let bytes = answer(service, request).await.encode_to_vec();
    // Our own encoding always decodes; were it ever not to, the empty answer (no status)
    // would fail every test that reads it, and Envoy denies such an answer.
    CheckResponse::decode(bytes.as_slice()).unwrap_or_default()
}
