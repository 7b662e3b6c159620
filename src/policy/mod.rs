//! The policy: its file format (`document`), request-path canonicalization (`path`) and the
//! compiled, immutable snapshot requests are decided against (`compile`). Pure and synchronous:
//! no I/O, no async, nothing from gRPC or SQL.

pub mod compile;
pub mod document;
pub mod path;
pub mod subjects;

pub use compile::{Grants, Match, PolicySnapshot};
pub use document::{Activity, Method, PolicyDocument};
pub use subjects::{Subjects, UserState};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: not a valid policy file")]
    Parse {
        origin: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{origin}: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("policy version {version} does not compile: {problem}")]
    Compile { version: i64, problem: String },
}
