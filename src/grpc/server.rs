//! The gRPC service Envoy calls, `envoy.service.auth.v3.Authorization`, answering with an
//! [`Answer`]: a `CheckResponse` whose identity part may arrive already encoded.
//!
//! Built on tonic's own server pieces (`tonic::server::Grpc`, `UnaryService`, the prost codec)
//! exactly as the generated `AuthorizationServer` is; the one difference is the response type,
//! which lets an allow reuse the bytes of its identity headers and metadata instead of
//! building and encoding them for every request.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic_prost::ProstCodec;

use crate::check::CheckService;

/// The gRPC method Envoy's ext_authz filter calls.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A `CheckResponse` on the wire: `encoded`, bytes of a `CheckResponse` encoded earlier, then
/// `rest`. Protobuf reads a message encoded in two pieces as their merge (repeated fields
/// append; map entries, scalars and the oneof's fields of the later piece win), so a client
/// decodes one `CheckResponse`. Decoding into an `Answer` fills `rest` alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    pub encoded: Arc<[u8]>,
    pub rest: CheckResponse,
}

impl From<CheckResponse> for Answer {
    fn from(rest: CheckResponse) -> Self {
        Answer {
            encoded: Arc::default(),
            rest,
        }
    }
}

impl Message for Answer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded);
        self.rest.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.rest.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.encoded.len() + self.rest.encoded_len()
    }

    fn clear(&mut self) {
        self.encoded = Arc::default();
        self.rest.clear();
    }
}

/// Serves `Authorization/Check` from a [`CheckService`]; any other method of the service is
/// answered `UNIMPLEMENTED`, as a generated server would.
#[derive(Clone)]
pub struct AuthorizationService {
    inner: Arc<CheckService>,
}

impl AuthorizationService {
    pub fn new(inner: CheckService) -> Self {
        Self::from_shared(Arc::new(inner))
    }

    /// Serves a Check service shared with another front (the HTTP mode).
    pub fn from_shared(inner: Arc<CheckService>) -> Self {
        AuthorizationService { inner }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

struct Check(Arc<CheckService>);

impl UnaryService<CheckRequest> for Check {
    type Response = Answer;
    type Future = BoxFuture<tonic::Response<Answer>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<CheckRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            // Never a gRPC error: Envoy would apply its failure mode instead of our decision.
            Ok(tonic::Response::new(
                super::answer(&service, request.get_ref()).await,
            ))
        })
    }
}

impl<B> Service<http::Request<B>> for AuthorizationService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http::<Body>()) });
        }
        let check = Check(self.inner.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<Answer, CheckRequest>::default());
            Ok(grpc.unary(check, request).await)
        })
    }
}
