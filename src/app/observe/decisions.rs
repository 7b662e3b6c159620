//! The decision log: one JSON line per decision (`log.decisions`), for "why was this request
//! denied?". Built on the request path from what the decision already holds, then handed to a
//! writer task over a bounded channel: a full channel drops the event and counts it, never
//! blocks a Check. Allows are sampled (`allow_sample`); denies are all kept up to
//! `deny_limit_per_second`. Dropped events are reported in the log itself, as a
//! `decisions_dropped` line, and on `/metrics`.
//!
//! What an event never holds: a header value (so no token, cookie or API token), and by
//! default the query string. It names the caller by subject id and credential kind, with the
//! role and permission names its credential carried (or an API token's id and limit), so
//! `replay` and `why` can decide it again. When a candidate policy is loaded and decides
//! otherwise, the event carries its decision (`shadow`) and is kept like a deny.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::value::UnixTime;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};

use crate::app::observe::event::{
    disagrees, Asked, DecisionEvent, DroppedEvent, LogLine, SCHEMA_VERSION,
};
use crate::authz::Decision;
use crate::check::{DecisionObserver, Observed};
use crate::config::DecisionLogConfig;

/// Events waiting for the writer; beyond this they are dropped and counted.
const QUEUE: usize = 8192;
/// How often the writer reports drops when nothing else is written.
const DROP_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Where decision events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    /// `off` is `None`.
    pub fn parse(value: &str) -> Option<Output> {
        match value {
            "off" => None,
            "stdout" => Some(Output::Stdout),
            path => Some(Output::File(PathBuf::from(path))),
        }
    }
}

/// The request-path half: samples, rate-limits and queues events.
pub struct DecisionLog {
    tx: mpsc::Sender<String>,
    allow_sample: f64,
    include_query: bool,
    deny_limit: u64,
    /// (unix second << 32) | denies logged in that second.
    deny_window: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").finish_non_exhaustive()
    }
}

/// The writer half: a task that appends queued events to the output.
pub struct DecisionWriter {
    rx: mpsc::Receiver<String>,
    output: Output,
    dropped: Arc<AtomicU64>,
}

/// A decision log and its writer, for `config` (`None` when `output` is `off`).
pub fn decision_log(config: &DecisionLogConfig) -> Option<(Arc<DecisionLog>, DecisionWriter)> {
    let output = Output::parse(config.output.trim())?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let log = DecisionLog {
        tx,
        allow_sample: config.allow_sample,
        include_query: config.include_query,
        deny_limit: u64::from(config.deny_limit_per_second),
        deny_window: AtomicU64::new(0),
        dropped: dropped.clone(),
    };
    Some((
        Arc::new(log),
        DecisionWriter {
            rx,
            output,
            dropped,
        },
    ))
}

impl DecisionLog {
    /// Events dropped so far (deny limit, or the writer behind).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether one more deny fits in this second's limit.
    fn deny_admitted(&self, now: u64) -> bool {
        let mut current = self.deny_window.load(Ordering::Relaxed);
        loop {
            let (second, count) = (current >> 32, current & 0xffff_ffff);
            let next = if second == now & 0xffff_ffff {
                if count >= self.deny_limit {
                    return false;
                }
                current + 1
            } else {
                ((now & 0xffff_ffff) << 32) | 1
            };
            match self.deny_window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    fn event(&self, o: &Observed<'_>, now: SystemTime) -> String {
        let request = o.request;
        let path = if self.include_query {
            request.path
        } else {
            request.path.split('?').next().unwrap_or_default()
        };
        let traceparent = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            .map(|(_, v)| v.as_ref())
            .filter(|v| is_traceparent(v));
        let asked = Asked {
            decision_id: o.decision_id,
            time: humantime::format_rfc3339_millis(now).to_string(),
            method: request.method,
            host: request.host,
            path,
            latency_us: u64::try_from(o.elapsed.as_micros()).unwrap_or(u64::MAX),
            traceparent,
        };
        LogLine::Decision(Box::new(DecisionEvent::new(asked, o.decision, o.shadow))).to_json()
    }
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), so nothing else rides along.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

impl DecisionObserver for DecisionLog {
    fn observe(&self, observed: &Observed<'_>) {
        let now = SystemTime::now();
        let disagreement = observed
            .shadow
            .is_some_and(|s| disagrees(observed.decision, s));
        let keep = match observed.decision {
            // Sampled allows are not dropped events: they were never meant to be logged. An
            // allow the candidate policy would deny is kept like a deny.
            Decision::Allow(_) if !disagreement => {
                self.allow_sample >= 1.0 || rand::random::<f64>() < self.allow_sample
            }
            _ => {
                let second = UnixTime::from_system(now).map_or(0, |t| t.as_secs().unsigned_abs());
                if !self.deny_admitted(second) {
                    self.drop_one();
                    return;
                }
                true
            }
        };
        if keep && self.tx.try_send(self.event(observed, now)).is_err() {
            self.drop_one();
        }
    }
}

impl DecisionWriter {
    /// Appends events until `stop`, then writes what is queued and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &self.output {
            Output::Stdout => Box::new(tokio::io::stdout()),
            Output::File(path) => match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
            {
                Ok(f) => Box::new(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the decision log; decisions are not logged");
                    return;
                }
            },
        };
        let mut reported = 0;
        let mut buffer = Vec::with_capacity(64 * 1024);
        // Drops are reported even when nothing else is logged (a flood past the deny limit).
        let mut tick = tokio::time::interval(DROP_REPORT_INTERVAL);
        loop {
            let woke = tokio::select! {
                line = self.rx.recv() => line.map(Some),
                _ = tick.tick() => Some(None),
                _ = stop.wait_for(|s| *s) => None,
            };
            let line = match woke {
                None => None,
                Some(Some(line)) => Some(line),
                Some(None) => {
                    self.note_drops(&mut buffer, &mut reported);
                    if let Err(e) = write_all(&mut out, &mut buffer).await {
                        tracing::error!(error = %e, "cannot write the decision log");
                    }
                    continue;
                }
            };
            let Some(line) = line else { break };
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
            // Everything queued meanwhile, in one write.
            while buffer.len() < 64 * 1024 {
                match self.rx.try_recv() {
                    Ok(line) => {
                        buffer.extend_from_slice(line.as_bytes());
                        buffer.push(b'\n');
                    }
                    Err(_) => break,
                }
            }
            self.note_drops(&mut buffer, &mut reported);
            if let Err(e) = write_all(&mut out, &mut buffer).await {
                tracing::error!(error = %e, "cannot write the decision log");
            }
        }
        while let Ok(line) = self.rx.try_recv() {
            buffer.extend_from_slice(line.as_bytes());
            buffer.push(b'\n');
        }
        self.note_drops(&mut buffer, &mut reported);
        let _ = write_all(&mut out, &mut buffer).await;
    }

    /// Adds a `decisions_dropped` line when events were dropped since the last one.
    fn note_drops(&self, buffer: &mut Vec<u8>, reported: &mut u64) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > *reported {
            let line = LogLine::DecisionsDropped(DroppedEvent {
                v: SCHEMA_VERSION,
                time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                count: dropped - *reported,
                total: dropped,
            });
            buffer.extend_from_slice(line.to_json().as_bytes());
            buffer.push(b'\n');
            *reported = dropped;
        }
    }
}

async fn write_all(
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    buffer: &mut Vec<u8>,
) -> std::io::Result<()> {
    if buffer.is_empty() {
        return Ok(());
    }
    let result = async {
        out.write_all(buffer).await?;
        out.flush().await
    }
    .await;
    buffer.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_the_w3c_shape_only() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-Bearer eyJhbGciOiJIUzI1NiJ9-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn denies_beyond_the_limit_in_one_second_are_refused() {
        let config = DecisionLogConfig {
            output: "stdout".to_owned(),
            deny_limit_per_second: 3,
            ..DecisionLogConfig::default()
        };
        let (log, _writer) = decision_log(&config).expect("on");
        let admitted = (0..10).filter(|_| log.deny_admitted(1_000)).count();
        assert_eq!(admitted, 3);
        assert!(log.deny_admitted(1_001), "a new second, a new allowance");
    }
}
