//! The candidate policy's decision (`policy apply --shadow`): the same request and the same
//! identified caller, decided against the candidate snapshot, for counting and logging where
//! it would differ. Never enforced: the live decision is the answer.

use std::sync::Arc;

use super::{path, Authorizer, Decision, DenyCause, Revocation, SnapshotHandle, TokenHolder};
use crate::identity::{Principal, TokenCaller, TokenSubject};
use crate::policy::{PolicySnapshot, Subjects};

impl Authorizer {
    /// Evaluates every decided request against the candidate in `shadow` too, when one is
    /// loaded there.
    pub fn with_shadow(mut self, shadow: SnapshotHandle) -> Self {
        self.shadow = Some(shadow);
        self
    }

    /// What the candidate would decide for a request the live policy decided as `live`:
    /// `None` without a candidate, or when the live decision came before the policy (a bad
    /// path or credential, no snapshot, CSRF), which no policy changes.
    pub fn decide_shadow(
        &self,
        req: &super::AccessRequest<'_>,
        live: &Decision,
    ) -> Option<Decision> {
        let guard = self.shadow.as_ref()?.load();
        let candidate = guard.as_deref()?;
        let principal = match live {
            Decision::Allow(a) => a.principal.as_ref(),
            Decision::Deny(d) => match d.cause {
                DenyCause::NoActivity { .. } | DenyCause::Revoked(_) => d.principal.as_ref(),
                _ => return None,
            },
        };
        let canonical = path::canonicalize(req.path).ok()?;
        Some(decide_on(
            candidate, req.method, req.host, &canonical, principal, self.jwt,
        ))
    }
}

/// The policy step against `snapshot` for a caller identified against another snapshot of the
/// same store: an API token's holder is looked up again in `snapshot`'s subjects (its roles, or
/// whether it still exists); a JWT caller is checked against them in the policy step anyway.
pub fn decide_on(
    snapshot: &PolicySnapshot,
    method: &str,
    host: &str,
    canonical_path: &str,
    principal: Option<&Arc<Principal>>,
    jwt: super::JwtSubjects,
) -> Decision {
    let principal = match principal.map(|p| rebased(p, snapshot.subjects())) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(why)) => return Decision::deny(snapshot, principal.cloned(), why.into()),
    };
    super::decide_with(snapshot, method, host, canonical_path, principal, jwt)
}

/// `principal` as `subjects` have it: an API token caller with its holder's roles there
/// (refused when the holder is gone or disabled); any other caller unchanged.
fn rebased(principal: &Arc<Principal>, subjects: &Subjects) -> Result<Arc<Principal>, Revocation> {
    let Principal::ApiToken(token) = principal.as_ref() else {
        return Ok(principal.clone());
    };
    let holder = match &token.owner {
        TokenSubject::User { id, .. } => TokenHolder::User(*id),
        TokenSubject::ServiceAccount { name } => TokenHolder::ServiceAccount(name.clone()),
    };
    let found = match &holder {
        TokenHolder::User(id) => subjects
            .user(&id.to_string())
            .map(|u| (u.disabled, &u.roles)),
        TokenHolder::ServiceAccount(name) => subjects.account(name).map(|a| (a.disabled, &a.roles)),
    };
    let (disabled, roles) = found.ok_or(Revocation::NotInStore)?;
    if disabled {
        return Err(Revocation::UserDisabled);
    }
    if *roles == token.roles {
        return Ok(principal.clone());
    }
    Ok(Arc::new(Principal::ApiToken(TokenCaller {
        roles: roles.clone(),
        ..token.clone()
    })))
}
