//! Whether the store is reachable, as every caller of it finds out: the reloader's refreshes,
//! its LISTEN connection, the last-used writer, housekeeping and the login endpoints all report
//! here. The first failure that means the store cannot be reached (a connection or pool error,
//! never a refused write) flips `store_reachable`, logs the outage once and wakes the reloader
//! to retry on its backoff; the next success ends it, logged once. Each report says when its
//! call started: a call that started before the last opposite finding is stale (a refresh
//! that was already waiting for a connection when the store came back) and changes nothing,
//! so an outage's edges are not logged twice.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;

use crate::app::refresh::status::ReloadStatus;
use crate::store::StoreError;

/// Shared by everything that calls the store.
#[derive(Clone)]
pub(in crate::app) struct StoreHealth {
    status: Arc<Mutex<ReloadStatus>>,
    wake: Arc<Notify>,
}

impl StoreHealth {
    pub fn new(status: Arc<Mutex<ReloadStatus>>) -> Self {
        StoreHealth {
            status,
            wake: Arc::default(),
        }
    }

    /// A store call made `during` something, started at `started`, failed. An outage is
    /// recorded (and logged when it starts); any other error is the caller's to report.
    /// Returns whether it was an outage.
    pub fn failed(&self, during: &'static str, error: &StoreError, started: Instant) -> bool {
        if !error.is_outage() {
            return false;
        }
        let message = crate::error_chain(error);
        if let Ok(mut s) = self.status.lock() {
            if s.reached_since.is_some_and(|at| at > started) {
                return true;
            }
            s.unreachable_since = Some(Instant::now());
            if !s.outage {
                s.outage = true;
                s.outages += 1;
                tracing::error!(error = %message, during, serving_version = s.version, "policy store unreachable; deciding on the last good snapshot");
            }
            s.store_reachable = false;
            s.last_error = Some(message);
        }
        self.wake.notify_one();
        true
    }

    /// A store call started at `started` succeeded: the store is reachable (an outage ends,
    /// logged once).
    pub fn reached(&self, started: Instant) {
        if let Ok(mut s) = self.status.lock() {
            if s.unreachable_since.is_some_and(|at| at > started) {
                return;
            }
            s.reached_since = Some(Instant::now());
            s.store_reachable = true;
            s.reachable_at = Some(SystemTime::now());
            if s.outage {
                s.outage = false;
                s.last_error = None;
                tracing::info!("policy store reachable again");
            }
        }
    }

    /// Makes a store call and reports its outcome.
    pub async fn call<T>(
        &self,
        during: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        match &result {
            Ok(_) => self.reached(started),
            Err(e) => {
                self.failed(during, e, started);
            }
        }
        result
    }

    /// Resolves when a caller other than the reloader has found an outage.
    pub async fn outage_reported(&self) {
        self.wake.notified().await;
    }
}
