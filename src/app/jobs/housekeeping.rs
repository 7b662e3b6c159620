//! Housekeeping on a schedule: every `database.gc_interval` each sidecar asks the store for one
//! round (`SqlStore::collect_garbage`), and one leader at a time does the work — the holder of
//! a PostgreSQL advisory lock, or on SQLite whoever has the database's write lock; the others
//! skip the round. Rounds and removed rows are counted for `/metrics` (`GcCounts`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::value::UnixTime;

use tokio::sync::watch;

use crate::app::refresh::health::StoreHealth;
use crate::store::{GcOutcome, GcTable, SqlStore, StoreError};

/// Housekeeping rounds by outcome, and rows removed by table, since start.
#[derive(Debug, Default)]
pub struct GcCounts {
    done: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    removed: [AtomicU64; GcTable::ALL.len()],
}

impl GcCounts {
    pub(in crate::app) fn record(&self, outcome: &Result<GcOutcome, StoreError>) {
        match outcome {
            Ok(GcOutcome::Done(removed)) => {
                self.done.fetch_add(1, Ordering::Relaxed);
                for (slot, (_, rows)) in self.removed.iter().zip(removed.iter()) {
                    slot.fetch_add(rows, Ordering::Relaxed);
                }
            }
            Ok(GcOutcome::Skipped) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Rounds by outcome: `done` (this sidecar was the leader), `skipped`, `failed`.
    pub fn runs(&self) -> [(&'static str, u64); 3] {
        [
            ("done", self.done.load(Ordering::Relaxed)),
            ("skipped", self.skipped.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }

    /// Rows removed, by table (every table, in `GcTable::ALL` order).
    pub fn removed(&self) -> Vec<(&'static str, u64)> {
        GcTable::ALL
            .iter()
            .zip(&self.removed)
            .map(|(t, n)| (t.name(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

fn now_unix() -> i64 {
    UnixTime::now_or_epoch().as_secs()
}

/// Runs a round every `every` (the first one interval after start) until `stop`.
pub(in crate::app) async fn run(
    store: SqlStore,
    every: Duration,
    counts: Arc<GcCounts>,
    health: StoreHealth,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let outcome = health
            .call("housekeeping", store.collect_garbage(now_unix()))
            .await;
        counts.record(&outcome);
        match outcome {
            Ok(GcOutcome::Done(removed)) if removed.total() > 0 => {
                let by_table: Vec<String> = removed
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(t, n)| format!("{}={n}", t.name()))
                    .collect();
                tracing::info!(removed = %by_table.join(" "), "housekeeping removed rows that can no longer matter");
            }
            Ok(GcOutcome::Done(_)) => tracing::debug!("housekeeping found nothing to remove"),
            Ok(GcOutcome::Skipped) => {
                tracing::debug!("housekeeping skipped: another portcullis holds the lock")
            }
            // An outage is logged once, by `health`.
            Err(e) if e.is_outage() => {}
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "housekeeping failed; will try next round")
            }
        }
    }
}
