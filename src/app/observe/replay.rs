//! Reading decision logs back (`portcullis replay`, `portcullis why`): the events the decision
//! log writes, parsed, and a logged decision decided again against another snapshot (a
//! candidate policy, or the live one now). The caller is rebuilt from what the event names: its
//! subject id, credential kind and the roles, permissions or token limit its credential named;
//! never a credential, which the log never holds.

use std::sync::Arc;

use crate::app::observe::event::{CredentialKind, DecisionEvent, Outcome};
use crate::authz::{decide_on, Decision, JwtSubjects};
use crate::identity::{JwtCaller, Principal, TokenCaller, TokenSubject, UnixTime};
use crate::policy::{path, PolicySnapshot};

/// A decision event read back: the very type the decision log writes.
pub type LoggedDecision = DecisionEvent;

impl LoggedDecision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// Whether a policy decided it: an allow, or a deny for want of a matching activity
    /// (or of any credential). Other denies came before the policy step (a bad path or
    /// credential, no snapshot, CSRF), and no policy changes them.
    pub fn replayable(&self) -> bool {
        self.allowed()
            || matches!(
                self.reason.as_deref(),
                Some("no_matching_activity" | "missing_credential")
            )
    }

    /// The caller as far as the event tells: `Ok(None)` for an anonymous request, `Err` when
    /// the event names a caller it cannot be rebuilt from.
    pub fn principal(&self) -> Result<Option<Arc<Principal>>, String> {
        let (Some(subject), Some(kind)) = (self.principal.as_deref(), self.credential) else {
            return Ok(None);
        };
        let caller = self.caller.clone().unwrap_or_default();
        let principal = match kind {
            CredentialKind::Jwt => {
                let at = humantime::parse_rfc3339(&self.time)
                    .ok()
                    .and_then(UnixTime::from_system);
                Principal::Jwt(JwtCaller {
                    subject: subject.to_owned(),
                    email: None,
                    email_verified: false,
                    name: None,
                    roles: caller.roles,
                    permissions: caller.permissions,
                    expires_at: UnixTime::from_secs(i64::MAX / 2),
                    issued_at: at,
                    jti: None,
                    sid: None,
                })
            }
            CredentialKind::ApiToken => {
                let owner = match subject.strip_prefix("sa:") {
                    Some(name) => TokenSubject::ServiceAccount {
                        name: name.to_owned(),
                    },
                    None => TokenSubject::User {
                        id: subject
                            .parse()
                            .map_err(|_| format!("api token owner {subject:?} is not a user id"))?,
                        email: String::new(),
                        name: None,
                    },
                };
                Principal::ApiToken(TokenCaller {
                    token_id: caller.token_id.unwrap_or_default(),
                    owner,
                    roles: caller.roles,
                    limit: caller.limit,
                    expires_at: None,
                })
            }
            other => {
                return Err(format!(
                    "credential kind {:?} cannot be replayed",
                    other.as_str()
                ))
            }
        };
        Ok(Some(Arc::new(principal)))
    }

    /// This request decided again against `snapshot`; `Err` when it cannot be.
    pub fn redecide(
        &self,
        snapshot: &PolicySnapshot,
        jwt: JwtSubjects,
    ) -> Result<Decision, String> {
        let principal = self.principal()?;
        let canonical = path::canonicalize(&self.path).map_err(|e| e.to_string())?;
        Ok(decide_on(
            snapshot,
            &self.method,
            &self.host,
            &canonical,
            principal.as_ref(),
            jwt,
        ))
    }
}

/// A decision in one line: `allow (permission p)` or `deny 403 reason`.
pub fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Allow(a) => format!("allow (permission {})", a.matched_permission),
        Decision::Deny(d) => format!("deny {} {}", d.reason.status().http_code(), d.reason.code()),
    }
}
