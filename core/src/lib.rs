//! portcullis's decision core: who is calling (`identity`), what the policy allows (`policy`)
//! and the decision over both (`authz`), with the value types they share (`value`). Pure and synchronous: no I/O, no async runtime, no
//! protocol types. The sidecar and the in-process Envoy filter (wasm32-wasip1) share it, so
//! no decision logic exists twice.

pub mod authz;
pub mod identity;
pub mod policy;
pub mod value;

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
