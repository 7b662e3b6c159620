//! What operators read: the Prometheus metrics, the decision log (one typed event, written
//! here and read back by `replay` and `why`), the admin endpoint and the in-process bundle.

pub(in crate::app) mod admin;
pub(in crate::app) mod bundle;
pub(in crate::app) mod decisions;
pub mod event;
pub(in crate::app) mod metrics;
pub mod replay;
