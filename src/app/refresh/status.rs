//! The serving snapshot's status: which version is served and since when, whether the store
//! answers, the candidate policy's state. The reloader and the store-health tracker write it,
//! `/status` and `/metrics` read it; its JSON lives here with it, so one file owns the state.

use std::time::SystemTime;

use crate::value::UnixTime;

/// What the reloader knows about the snapshot and the store (served on `/status`).
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub(in crate::app) version: Option<i64>,
    pub(in crate::app) loaded_at: Option<SystemTime>,
    pub(in crate::app) store_reachable: bool,
    pub(in crate::app) last_error: Option<String>,
    /// When a refresh last reached the store.
    pub(in crate::app) reachable_at: Option<SystemTime>,
    /// Refreshes that reached the store, and those that failed.
    pub(in crate::app) refreshes: u64,
    pub(in crate::app) refresh_failures: u64,
    /// How long the last refresh that loaded a snapshot took, seconds.
    pub(in crate::app) last_load_seconds: Option<f64>,
    /// When the candidate policy being evaluated was stored (unix seconds), if one is.
    pub(in crate::app) candidate_stored_at: Option<i64>,
    /// Why the stored candidate policy is not evaluated, if it is not.
    pub(in crate::app) candidate_error: Option<String>,
    /// An outage has been logged and its end not yet.
    pub(in crate::app) outage: bool,
    /// Outages since start (each logged once).
    pub(in crate::app) outages: u64,
    /// When a store call last found the store reachable, and unreachable.
    pub(in crate::app) reached_since: Option<std::time::Instant>,
    pub(in crate::app) unreachable_since: Option<std::time::Instant>,
}

impl ReloadStatus {
    /// The `/status` document's snapshot and store part.
    pub(in crate::app) fn to_json(&self) -> serde_json::Value {
        let unix = |t: SystemTime| UnixTime::from_system(t).map_or(0, UnixTime::as_secs);
        serde_json::json!({
            "serving": self.version.is_some(),
            "policy_version": self.version,
            "snapshot_loaded_at": self.loaded_at.map(unix),
            "snapshot_age_seconds": self.loaded_at.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()),
            "store_reachable": self.store_reachable,
            "last_error": self.last_error,
            "candidate": (self.candidate_stored_at.is_some() || self.candidate_error.is_some()).then(|| serde_json::json!({
                "evaluated": self.candidate_stored_at.is_some() && self.candidate_error.is_none(),
                "stored_at": self.candidate_stored_at,
                "error": self.candidate_error,
            })),
        })
    }
}
