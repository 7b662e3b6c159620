//! The policy: its file format (`document`), what a valid one satisfies (`validate`), merging
//! and diffing (`merge`), activity path regexes (`pattern`), request-path canonicalization
//! (`path`) and the compiled, immutable snapshot requests are decided against (`compile`).
//! Pure and synchronous: no I/O, no async, nothing from gRPC or SQL.

pub mod compile;
pub mod document;
pub mod merge;
pub mod path;
pub mod pattern;
pub mod subjects;
pub mod validate;

pub use compile::{Grants, Match, PolicySnapshot};
pub use document::{Activity, ActivityError, Method, PolicyDocument};
pub use pattern::PatternError;
pub use subjects::{
    AccountState, DigestError, Subjects, SubjectsWire, TokenHolder, TokenState, UserState,
};
pub use validate::{EntryKind, Problem};

/// Why a policy cannot be read, accepted or compiled. The cause is the source, so
/// `error_chain` prints the origin, the entry and the underlying error on one line.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: not a valid policy file")]
    Parse {
        origin: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("cannot write the policy as yaml")]
    Serialize(#[source] serde_norway::Error),
    /// `origin` names the file or the stored version; `problem` the entry and what is wrong.
    #[error("{origin} is invalid")]
    Invalid {
        origin: String,
        /// Boxed: the largest variant, and errors travel through every `Result` here.
        #[source]
        problem: Box<Problem>,
    },
    /// A validated policy whose per-method regex set still does not build (e.g. too large).
    #[error("policy version {version} does not compile")]
    Compile {
        version: i64,
        #[source]
        source: regex::Error,
    },
}

impl PolicyError {
    /// `problem`, attributed to `origin` (a file name, or which policy it is).
    pub fn invalid(origin: &str, problem: Problem) -> Self {
        PolicyError::Invalid {
            origin: origin.to_owned(),
            problem: Box::new(problem),
        }
    }
}

/// The documented example policy, shared by the unit tests.
#[cfg(test)]
const EXAMPLE: &str = r#"
permissions:
  roles:read:
    description: View roles and their members
    activities:
      - GET /api/v1/roles
      - GET /api/v1/roles/[^/]+/users
  roles:write:
    activities:
      - POST /api/v1/roles
      - {method: PUT, path: "/api/v1/roles/[^/]+", host: allocations.example.com}
  public:
    activities: [GET /healthz]
roles:
  admin: [roles:read, roles:write]
  viewer: [roles:read]
users:
  - {email: ada@example.com, name: Ada Lovelace, roles: [admin]}
service_accounts:
  - {name: reporting-bot, roles: [viewer]}
"#;
