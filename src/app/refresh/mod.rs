//! Keeping the serving snapshot fresh: the reloader (a full load, or a patch per change),
//! the candidate policy beside it, the store's health as every store call reports it, and the
//! status they own (`/status` and `/metrics` read it).

pub(in crate::app) mod health;
pub(in crate::app) mod reload;
pub(in crate::app) mod shadow;
pub(in crate::app) mod status;
pub(in crate::app) mod watched;
