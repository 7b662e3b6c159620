//! portcullis: an Envoy external-authorization service. It decides, for every request Envoy
//! forwards, who is calling (`identity`, with keys `keyring` reads) and whether they may call
//! this endpoint (`policy`, `authz`); `grpc` speaks Envoy's ext_authz protocol, `store` keeps
//! the policy in SQL, `login` signs users in and issues portcullis's own JWTs, and `app`
//! wires them together.

pub mod app;
pub mod authz;
pub mod browser;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod identity;
pub mod keyring;
pub mod login;
pub mod manage;
pub mod policy;
pub mod store;

/// `a: b: c` for an error and its sources, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
