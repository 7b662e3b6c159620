//! portcullis: an Envoy external-authorization service. It decides, for every request Envoy
//! forwards, who is calling (`identity`, with keys `keyring` reads) and whether they may call
//! this endpoint (`policy`, `authz`); `check` answers a Check, the same for every front;
//! `grpc` speaks Envoy's ext_authz protocol and `http_authz` its HTTP mode; `store` keeps the
//! policy in SQL, `login` signs users in and issues portcullis's own JWTs, and `app` wires
//! them together.

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod http_authz;
pub mod keyring;
pub mod login;
pub mod manage;
pub mod store;

// The decision core, a crate of its own (core/) so the in-process filter builds from it too.
pub use portcullis_core::{authz, error_chain, identity, policy, value};
