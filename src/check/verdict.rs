//! A Check's answer, protocol-neutral: allow (identity headers to set, headers to remove, the
//! cleaned cookie, a renewed cookie for the client, the decision id), deny (status, headers,
//! body) or a sign-in redirect. Every front renders one of these and decides nothing itself;
//! the headers and bodies come from `authz::answer`, the one rendering every mode shares.

use std::sync::{Arc, OnceLock};

use crate::authz::answer::{self, identity_facts, DECISION_ID_HEADER};
use crate::authz::{AccessRequest, Allow, Decision, Deny, Reason, Stripping};
use crate::identity::Principal;

/// The status of a sign-in redirect.
pub const REDIRECT_STATUS: u16 = 302;

/// A caller's identity in one snapshot, as every front sets it: the identity headers, and the
/// facts a front may also carry as metadata. It depends only on the principal and the
/// snapshot, so the service renders it once per pair and shares it ([`super::CheckService`]).
pub struct Identity {
    /// The identity headers (`x-auth-*`), set with overwrite semantics, in order.
    pub headers: Vec<(&'static str, String)>,
    /// Their names, which an allow must not also remove.
    names: Vec<&'static str>,
    /// Who, when the caller presented a credential. Held, too, so that its address (half of
    /// the service's cache key) names no other principal while this lives.
    pub principal: Option<Arc<Principal>>,
    pub roles: Vec<String>,
    pub permissions: Vec<Arc<str>>,
    /// A front's own encoding of this identity, made the first time it asks (the gRPC front's
    /// protobuf part): bytes, so the front reuses them for every request of this caller.
    encoded: OnceLock<Arc<[u8]>>,
}

impl Identity {
    /// The identity an allow sets.
    pub fn of(allow: &Allow) -> Self {
        let headers = identity_facts(allow);
        Identity {
            names: headers.iter().map(|(name, _)| *name).collect(),
            headers,
            principal: allow.principal.clone(),
            roles: allow.roles.clone(),
            permissions: allow.permissions.clone(),
            encoded: OnceLock::new(),
        }
    }

    /// The names of the identity headers.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// A front's encoding of this identity: `encode`'s bytes, made on the first call and
    /// reused after. One front encodes per service (the gRPC front).
    pub fn encoded(&self, encode: impl FnOnce(&Identity) -> Vec<u8>) -> Arc<[u8]> {
        self.encoded.get_or_init(|| encode(self).into()).clone()
    }

    /// About how many bytes this holds once encoded: the headers and the facts, twice (as
    /// headers and as metadata), for the service's cache to weigh.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let facts: usize = self.roles.iter().map(String::len).sum::<usize>()
            + self.permissions.iter().map(|p| p.len()).sum::<usize>();
        u32::try_from(2 * (headers + facts)).unwrap_or(u32::MAX)
    }
}

/// What an allow changes per request besides the identity: the caller's credential taken out
/// (`forward_credential`), and a renewed cookie for the browser.
#[derive(Debug, Default, Clone)]
pub struct PerRequest {
    pub stripping: Stripping,
    /// A `Set-Cookie` value for the response to the browser (a renewed JWT cookie).
    pub set_cookie: Option<String>,
}

/// An allowed request, as the upstream and the client must see it.
pub struct Allowed {
    pub identity: Arc<Identity>,
    /// In `x-auth-decision-id` and in the decision log.
    pub decision_id: String,
    pub matched_permission: String,
    pub policy_version: i64,
    /// The client's headers the upstream must not receive (lower-case, sorted, once each):
    /// its own `x-auth-*` the identity does not overwrite, and the credential taken out.
    pub headers_to_remove: Vec<String>,
    /// The `Cookie` header the upstream receives instead of the client's (our JWT cookie taken
    /// out, the others kept); `None`: as sent.
    pub cookie: Option<String>,
    /// A `Set-Cookie` for the client (a renewed JWT cookie).
    pub set_cookie: Option<String>,
}

impl Allowed {
    /// `allow` of `request`, answered with `identity` (the allow's, rendered earlier).
    pub fn new(
        identity: Arc<Identity>,
        allow: &Allow,
        request: &AccessRequest<'_>,
        decision_id: &str,
        extra: PerRequest,
    ) -> Self {
        Allowed {
            headers_to_remove: answer::headers_to_remove(
                request,
                identity.names(),
                &extra.stripping,
            ),
            identity,
            decision_id: decision_id.to_owned(),
            matched_permission: allow.matched_permission.clone(),
            policy_version: allow.policy_version,
            cookie: extra.stripping.cookie,
            set_cookie: extra.set_cookie,
        }
    }

    /// The headers set on the upstream request besides the identity's, with overwrite
    /// semantics: the decision id, and the cleaned `cookie` when there is one.
    pub fn request_headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((DECISION_ID_HEADER, self.decision_id.as_str()))
            .chain(self.cookie.as_deref().map(|c| ("cookie", c)))
    }
}

/// A denied request, as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: Reason,
    /// The HTTP status (`401`, `403`, `400`, `503`).
    pub status: u16,
    /// The content type, a Bearer challenge on a 401, the decision id.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
    pub decision_id: String,
}

impl Denied {
    pub fn new(deny: &Deny, decision_id: &str) -> Self {
        let (status, headers, body) = answer::deny_answer(deny, decision_id);
        Denied {
            reason: deny.reason,
            status,
            headers,
            body,
            decision_id: decision_id.to_owned(),
        }
    }
}

/// A denied browser navigation, sent to the sign-in page instead of a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRedirect {
    /// Built from an allow-listed host only.
    pub location: String,
    pub decision_id: String,
}

impl LoginRedirect {
    /// Its headers: where to, never cached, the decision id.
    pub fn headers(&self) -> [(&'static str, &str); 3] {
        [
            ("location", &self.location),
            ("cache-control", "no-store"),
            (DECISION_ID_HEADER, &self.decision_id),
        ]
    }
}

/// One Check's answer.
pub enum Verdict {
    Allow(Allowed),
    Deny(Denied),
    LoginRedirect(LoginRedirect),
}

impl Verdict {
    /// A decision's answer as is: no sign-in redirect, no cache (the CLI, tests). The service
    /// answers the same, with the browser rules applied and the identity reused.
    pub fn of(
        decision: &Decision,
        request: &AccessRequest<'_>,
        decision_id: &str,
        extra: PerRequest,
    ) -> Self {
        match decision {
            Decision::Allow(allow) => Verdict::Allow(Allowed::new(
                Arc::new(Identity::of(allow)),
                allow,
                request,
                decision_id,
                extra,
            )),
            Decision::Deny(deny) => Verdict::Deny(Denied::new(deny, decision_id)),
        }
    }

    pub fn decision_id(&self) -> &str {
        match self {
            Verdict::Allow(a) => &a.decision_id,
            Verdict::Deny(d) => &d.decision_id,
            Verdict::LoginRedirect(r) => &r.decision_id,
        }
    }
}
