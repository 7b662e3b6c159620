//! The decision log's lines, as one typed, versioned schema: the writer (`decisions`) builds
//! them and the readers (`replay`, `why`) parse them with these very types, so the two cannot
//! drift apart. Every line is a JSON object tagged by `event` (`decision` or
//! `decisions_dropped`) and carrying the schema version `v`; a reader refuses a line of a newer
//! schema, or with a field it does not know, rather than guess. Names and ids only: never a
//! header value, a token or a cookie.

use serde::{Deserialize, Serialize};

use crate::authz::Decision;
use crate::identity::{self, PresentedKind, Principal};

/// The schema version this build writes and reads. Bump it when a field changes meaning or a
/// reader would misread a new field; the README's "Decision logs" section documents it.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogLine {
    Decision(Box<DecisionEvent>),
    DecisionsDropped(DroppedEvent),
}

/// Whether the request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
}

/// The kind of credential a request presented, accepted or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    Jwt,
    ApiToken,
    /// `portcullis check --permissions`: no credential, permissions assumed.
    Assumed,
    /// Refused before it could be read: two credentials, a non-Bearer scheme, a malformed
    /// header or cookie.
    Unreadable,
}

impl From<identity::CredentialKind> for CredentialKind {
    fn from(kind: identity::CredentialKind) -> Self {
        match kind {
            identity::CredentialKind::Jwt => CredentialKind::Jwt,
            identity::CredentialKind::ApiToken => CredentialKind::ApiToken,
            identity::CredentialKind::Assumed => CredentialKind::Assumed,
        }
    }
}

impl From<PresentedKind> for CredentialKind {
    fn from(kind: PresentedKind) -> Self {
        match kind {
            PresentedKind::Jwt => CredentialKind::Jwt,
            PresentedKind::ApiToken => CredentialKind::ApiToken,
            PresentedKind::Unreadable => CredentialKind::Unreadable,
        }
    }
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ApiToken => "api-token",
            CredentialKind::Assumed => "assumed",
            CredentialKind::Unreadable => "unreadable",
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionEvent {
    /// The schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// The same id as in the deny body, `x-auth-decision-id` and the sidecar's log line.
    pub decision_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub method: String,
    pub host: String,
    /// The request target without its query (unless `include_query`).
    pub path: String,
    pub outcome: Outcome,
    /// The HTTP status the client got.
    pub status: u16,
    /// The deny reason code; `null` on allow.
    pub reason: Option<String>,
    /// The permission that allowed it; `null` on deny.
    pub permission: Option<String>,
    /// The identified caller's subject id; `null` when nobody was identified.
    pub principal: Option<String>,
    /// The kind of credential presented (also when it was refused); `null`: none.
    pub credential: Option<CredentialKind>,
    /// What the identified caller's credential named; `null` when nobody was identified.
    pub caller: Option<LoggedCaller>,
    /// The version of the policy in force; `null` only when none was loaded.
    pub policy_version: Option<i64>,
    /// Time to decide and render, in the server.
    pub latency_us: u64,
    /// The W3C trace context Envoy sent, when well-formed.
    pub traceparent: Option<String>,
    /// The candidate policy's decision, when it has another outcome.
    pub shadow: Option<ShadowDecision>,
}

/// What an identified caller's credential named: what `replay` and `why` rebuild it from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedCaller {
    /// Role names from the JWT, or the API token owner's roles.
    pub roles: Vec<String>,
    /// Permission names from the JWT (or assumed); empty for an API token.
    pub permissions: Vec<String>,
    /// The API token's id (`tok_…`); `null` for other credentials.
    pub token_id: Option<String>,
    /// The API token's permission limit; `null`: none.
    pub limit: Option<Vec<String>>,
}

/// The candidate policy's decision of a request it decides otherwise than the live one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowDecision {
    pub outcome: Outcome,
    pub status: u16,
    pub reason: Option<String>,
    pub permission: Option<String>,
    /// The version of the live policy the candidate was compiled against.
    pub policy_version: Option<i64>,
}

/// Events the log could not keep since the last such line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DroppedEvent {
    pub v: u32,
    pub time: String,
    /// Dropped since the previous `decisions_dropped` line.
    pub count: u64,
    /// Dropped since the sidecar started.
    pub total: u64,
}

/// Why a line is not an event this build can read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not a decision log line")]
    Malformed(#[source] serde_json::Error),
    #[error("written with schema v{0}; this portcullis reads v{SCHEMA_VERSION}")]
    UnknownVersion(u64),
}

/// A decision log line, parsed.
pub fn parse_line(line: &str) -> Result<LogLine, EventError> {
    // The version first: a newer writer's fields would otherwise read as a malformed line.
    #[derive(Deserialize)]
    struct Versioned {
        v: Option<u64>,
    }
    let versioned: Versioned = serde_json::from_str(line).map_err(EventError::Malformed)?;
    match versioned.v {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {
            serde_json::from_str(line).map_err(EventError::Malformed)
        }
        Some(v) => Err(EventError::UnknownVersion(v)),
        None => Err(EventError::UnknownVersion(0)),
    }
}

impl LogLine {
    /// The line as written: one JSON object, no newline.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The parts of a decision the event records, whatever decided it.
struct Decided<'a> {
    outcome: Outcome,
    status: u16,
    reason: Option<&'static str>,
    permission: Option<&'a str>,
    principal: Option<&'a Principal>,
    credential: Option<CredentialKind>,
}

fn decided(decision: &Decision) -> Decided<'_> {
    match decision {
        Decision::Allow(a) => Decided {
            outcome: Outcome::Allow,
            status: 200,
            reason: None,
            permission: Some(&a.matched_permission),
            principal: a.principal.as_deref(),
            credential: a.principal.as_deref().map(|p| p.credential().into()),
        },
        Decision::Deny(d) => Decided {
            outcome: Outcome::Deny,
            status: d.reason.status().http_code(),
            reason: Some(d.reason.code()),
            permission: None,
            principal: d.principal.as_deref(),
            credential: match (d.principal.as_deref(), d.refused) {
                (Some(p), _) => Some(p.credential().into()),
                (None, Some(kind)) => Some(kind.into()),
                (None, None) => None,
            },
        },
    }
}

/// The request half of an event: what was asked, as the decision log keeps it.
pub struct Asked<'a> {
    pub decision_id: &'a str,
    pub time: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub latency_us: u64,
    pub traceparent: Option<&'a str>,
}

impl DecisionEvent {
    /// The event for `decision` of the request `asked`, with the candidate's `shadow`
    /// decision when it has another outcome.
    pub fn new(asked: Asked<'_>, decision: &Decision, shadow: Option<&Decision>) -> Self {
        let d = decided(decision);
        DecisionEvent {
            v: SCHEMA_VERSION,
            decision_id: asked.decision_id.to_owned(),
            time: asked.time,
            method: asked.method.to_owned(),
            host: asked.host.to_owned(),
            path: asked.path.to_owned(),
            outcome: d.outcome,
            status: d.status,
            reason: d.reason.map(str::to_owned),
            permission: d.permission.map(str::to_owned),
            principal: d.principal.map(|p| p.subject_id().to_string()),
            credential: d.credential,
            caller: d.principal.map(caller),
            policy_version: decision.policy_version(),
            latency_us: asked.latency_us,
            traceparent: asked.traceparent.map(str::to_owned),
            shadow: shadow.filter(|s| disagrees(decision, s)).map(|s| {
                let c = decided(s);
                ShadowDecision {
                    outcome: c.outcome,
                    status: c.status,
                    reason: c.reason.map(str::to_owned),
                    permission: c.permission.map(str::to_owned),
                    policy_version: s.policy_version(),
                }
            }),
        }
    }
}

/// Whether the candidate's decision has another outcome than the live one.
pub fn disagrees(live: &Decision, shadow: &Decision) -> bool {
    matches!(live, Decision::Allow(_)) != matches!(shadow, Decision::Allow(_))
}

/// What replaying a decision against another policy needs of its caller, besides the subject
/// id: the roles and permissions its credential named, or the API token's id and limit.
fn caller(principal: &Principal) -> LoggedCaller {
    match principal {
        Principal::Jwt(j) => LoggedCaller {
            roles: j.roles.clone(),
            permissions: j.permissions.clone(),
            token_id: None,
            limit: None,
        },
        Principal::ApiToken(t) => LoggedCaller {
            roles: t.roles.clone(),
            permissions: Vec::new(),
            token_id: Some(t.token_id.clone()),
            limit: t.limit.clone(),
        },
        Principal::Assumed { permissions } => LoggedCaller {
            permissions: permissions.clone(),
            ..LoggedCaller::default()
        },
    }
}

#[cfg(test)]
mod tests;
