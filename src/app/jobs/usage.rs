//! Last-used times of API tokens, written off the request path: the request path reports a
//! use with `try_send` (never blocking, dropped when the writer is behind: last-used is
//! advisory), and this task writes them in one batch per interval and once on shutdown. A
//! write that cannot reach the store is reported to `StoreHealth` (logged once per outage).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::refresh::health::StoreHealth;
use crate::store::PolicyStore;

/// Collects API-token uses and writes last-used times in one batch per `every`, and once
/// more on shutdown. A failed write keeps the batch for the next round.
pub(in crate::app) async fn write_token_use(
    store: Arc<dyn PolicyStore>,
    health: StoreHealth,
    mut uses: tokio::sync::mpsc::Receiver<(String, i64)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(every);
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            Some((id, at)) = uses.recv() => {
                let slot = pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
                continue;
            }
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        while let Ok((id, at)) = uses.try_recv() {
            let slot = pending.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
        if !pending.is_empty() {
            let batch: Vec<(String, i64)> = pending.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let recorded = health.call("recording api token use", store.record_token_use(&batch));
            match recorded.await {
                Ok(()) => {
                    pending.clear();
                    failing = false;
                }
                // An outage is logged once, by `health`; the batch waits for the store.
                Err(e) if e.is_outage() => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %crate::error_chain(&e), tokens = batch.len(), "cannot record api token use; will retry");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        if stopping {
            return;
        }
    }
}
