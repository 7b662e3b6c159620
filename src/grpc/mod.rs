//! The Envoy edge: `envoy.service.auth.v3.Authorization/Check`. Converts a `CheckRequest` into
//! an `AccessRequest`, asks the `Authorizer`, and converts the `Decision` back. `check` always
//! answers with a `CheckResponse`; it never returns a gRPC error (Envoy would then apply its
//! failure mode instead of our decision).

mod convert;

use std::borrow::Cow;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, Decision, DecisionIds, DenyCause};
use crate::identity::Principal;

pub use convert::{access_request, check_response};
pub use envoy_types::ext_authz::v3::pb::AuthorizationServer;

/// Serves Check for Envoy's ext_authz filter.
pub struct CheckService {
    authorizer: Arc<Authorizer>,
    ids: DecisionIds,
}

impl CheckService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        CheckService {
            authorizer,
            ids: DecisionIds::new(),
        }
    }

    /// Decides one request; the body of `check`, callable without tonic.
    pub async fn decide(&self, request: &CheckRequest) -> CheckResponse {
        let decision_id = self.ids.next();
        let access = convert::access_request(request);
        let decision = self.authorizer.decide(&access).await;
        log_decision(&decision, &access, &decision_id);
        convert::check_response(&decision, &access, &decision_id)
    }
}

/// Who a decision was about, for the log: the subject, "anonymous" for a request without a
/// credential, or "not identified" when it was denied before its credential was checked.
fn subject<'a>(principal: Option<&'a Arc<Principal>>, anonymous: bool) -> Cow<'a, str> {
    match principal {
        Some(p) => p.subject_id(),
        None if anonymous => Cow::Borrowed("anonymous"),
        None => Cow::Borrowed("not identified"),
    }
}

fn log_decision(decision: &Decision, access: &crate::authz::AccessRequest<'_>, decision_id: &str) {
    match decision {
        Decision::Allow(a) => tracing::debug!(
            decision = "allow",
            decision_id,
            method = access.method,
            user_id = %subject(a.principal.as_ref(), true),
            permission = %a.matched_permission,
            policy_version = a.policy_version,
            "request allowed"
        ),
        Decision::Deny(d) => tracing::info!(
            decision = "deny",
            decision_id,
            method = access.method,
            status = d.reason.status().http_code(),
            reason = d.reason.code(),
            user_id = %subject(
                d.principal.as_ref(),
                matches!(d.cause, DenyCause::NoActivity { .. })
            ),
            detail = %d.cause,
            "request denied"
        ),
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.decide(request.get_ref()).await))
    }
}
