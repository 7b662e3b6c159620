//! Prometheus metrics, served as OpenMetrics text on the admin listener's `/metrics`. One
//! registry per server (no global). Decisions are counted as they happen (the `CheckService`
//! observer); everything else is read when scraped from where it already lives: the
//! identifier's counters, the reloader's status, the log writer's drop count, the login
//! provider's key fetches. Label values are bounded: outcomes, deny reason codes, credential
//! kinds, cache names. Never a user, token, path or host.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::value::UnixTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::app::jobs::housekeeping::GcCounts;
use crate::app::observe::decisions::DecisionLog;
use crate::app::refresh::status::ReloadStatus;
use crate::app::LogDrops;
use crate::authz::{Decision, Reason};
use crate::check::{DecisionObserver, Observed};
use crate::identity::IdentifyCounts;
use crate::login::LoginService;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// A request the candidate policy decides otherwise: `change` is `allow_to_deny` or
/// `deny_to_allow`; `permission` the live policy's matched permission (allow_to_deny) or the
/// candidate's (deny_to_allow), a name from the policy, so bounded by it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    change: &'static str,
    permission: String,
}

/// The `change` label values of `shadow_disagreements`.
const ALLOW_TO_DENY: &str = "allow_to_deny";
const DENY_TO_ALLOW: &str = "deny_to_allow";

/// The server's registry and the metrics updated on the request path.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    check_seconds: Histogram,
    shadow_evaluations: Counter,
    shadow_disagreements: Family<ShadowLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// What the scrape reads from the rest of the server.
pub struct Sources {
    pub identify: Arc<IdentifyCounts>,
    pub status: Arc<Mutex<ReloadStatus>>,
    pub log_drops: LogDrops,
    pub login: Option<Arc<LoginService>>,
    pub decision_log: Option<Arc<DecisionLog>>,
    pub gc: Arc<GcCounts>,
}

impl Metrics {
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Check decisions by outcome and reason (allow, or the deny reason code)",
            decisions.clone(),
        );
        // 10 µs to about 1.3 s: a cached decision is microseconds, Envoy's timeout 0.5 s.
        let check_seconds = Histogram::new(exponential_buckets(10e-6, 2.0, 18));
        registry.register(
            "check_duration_seconds",
            "Time to decide and render one Check, in the server",
            check_seconds.clone(),
        );
        let shadow_evaluations = Counter::default();
        registry.register(
            "shadow_evaluations",
            "Requests also decided by the candidate policy (policy apply --shadow)",
            shadow_evaluations.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "shadow_disagreements",
            "Requests the candidate policy decides otherwise than the live one, by change and permission",
            shadow_disagreements.clone(),
        );
        // Every series a dashboard or alert may name exists from the start, at 0: a counter
        // that appears only on its first increment reads as "no data", and `rate()` misses
        // that first increment.
        drop(decisions.get_or_create(&DecisionLabels {
            outcome: "allow",
            reason: "",
        }));
        for reason in Reason::ALL {
            drop(decisions.get_or_create(&DecisionLabels {
                outcome: "deny",
                reason: reason.code(),
            }));
        }
        for change in [ALLOW_TO_DENY, DENY_TO_ALLOW] {
            drop(shadow_disagreements.get_or_create(&ShadowLabels {
                change,
                permission: String::new(),
            }));
        }
        registry.register_collector(Box::new(State(sources)));
        Metrics {
            registry,
            decisions,
            check_seconds,
            shadow_evaluations,
            shadow_disagreements,
        }
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl DecisionObserver for Metrics {
    fn observe(&self, observed: &Observed<'_>) {
        let labels = match observed.decision {
            Decision::Allow(_) => DecisionLabels {
                outcome: "allow",
                reason: "",
            },
            Decision::Deny(d) => DecisionLabels {
                outcome: "deny",
                reason: d.reason.code(),
            },
        };
        self.decisions.get_or_create(&labels).inc();
        self.check_seconds.observe(observed.elapsed.as_secs_f64());
        if let Some(shadow) = observed.shadow {
            self.shadow_evaluations.inc();
            let disagreement = match (observed.decision, shadow) {
                (Decision::Allow(a), Decision::Deny(_)) => Some((ALLOW_TO_DENY, a)),
                (Decision::Deny(_), Decision::Allow(a)) => Some((DENY_TO_ALLOW, a)),
                _ => None,
            };
            if let Some((change, allow)) = disagreement {
                let labels = ShadowLabels {
                    change,
                    permission: allow.matched_permission.clone(),
                };
                self.shadow_disagreements.get_or_create(&labels).inc();
            }
        }
    }
}

/// Read at scrape time.
struct State(Sources);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    UnixTime::from_system(t).map_or(0.0, UnixTime::as_secs_f64)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One counter family with a single label, from (label value, count) pairs.
fn labelled_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, count) in values {
        let labels = [(label, *value)];
        ConstCounter::new(*count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.0.identify;
        labelled_counters(
            &mut encoder,
            "credentials",
            "Credentials presented to Check, by kind",
            "kind",
            &[
                ("none", c.no_credential.load(Relaxed)),
                ("jwt_header", c.jwt_header.load(Relaxed)),
                ("jwt_cookie", c.jwt_cookie.load(Relaxed)),
                ("api_token", c.api_token.load(Relaxed)),
                ("refused", c.refused.load(Relaxed)),
            ],
        )?;
        labelled_counters(
            &mut encoder,
            "jwt_cache_lookups",
            "Verified-JWT cache lookups by result (a miss verifies the signature)",
            "result",
            &[
                ("hit", c.jwt_cache_hits.load(Relaxed)),
                ("miss", c.jwt_cache_misses.load(Relaxed)),
            ],
        )?;
        labelled_counters(
            &mut encoder,
            "api_token_cache_lookups",
            "API-token cache lookups by result (a miss reads the snapshot, never the store)",
            "result",
            &[
                ("hit", c.api_token_cache_hits.load(Relaxed)),
                ("miss", c.api_token_cache_misses.load(Relaxed)),
            ],
        )?;

        let (version, loaded_at, reachable, reachable_at, refreshes, failures, load_seconds) =
            match self.0.status.lock() {
                Ok(s) => (
                    s.version,
                    s.loaded_at,
                    s.store_reachable,
                    s.reachable_at,
                    s.refreshes,
                    s.refresh_failures,
                    s.last_load_seconds,
                ),
                Err(_) => (None, None, false, None, 0, 0, None),
            };
        gauge(
            &mut encoder,
            "serving",
            "1 while a snapshot is loaded and gRPC health says SERVING, else 0",
            f64::from(u8::from(version.is_some())),
        )?;
        if let Some(version) = version {
            gauge(
                &mut encoder,
                "snapshot_version",
                "The store's policy version of the serving snapshot",
                version as f64,
            )?;
        }
        if let Some(at) = loaded_at {
            gauge(
                &mut encoder,
                "snapshot_loaded_timestamp_seconds",
                "When the serving snapshot was loaded (unix seconds)",
                unix_seconds(at),
            )?;
            gauge(
                &mut encoder,
                "snapshot_age_seconds",
                "Seconds since the serving snapshot was loaded",
                at.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
            )?;
        }
        if let Some(seconds) = load_seconds {
            gauge(
                &mut encoder,
                "reload_duration_seconds",
                "How long the last reload that loaded a snapshot took",
                seconds,
            )?;
        }
        counter(
            &mut encoder,
            "reloads",
            "Refreshes that reached the store (loaded a snapshot or found it current)",
            refreshes,
        )?;
        counter(
            &mut encoder,
            "reload_failures",
            "Refreshes that failed (store unreachable, or a policy that does not compile)",
            failures,
        )?;
        gauge(
            &mut encoder,
            "store_reachable",
            "0 while the store cannot be reached (found by a refresh, the LISTEN connection or any other store call), else 1",
            f64::from(u8::from(reachable)),
        )?;
        if let Some(at) = reachable_at {
            gauge(
                &mut encoder,
                "store_last_reachable_timestamp_seconds",
                "When a store call last reached the store (unix seconds)",
                unix_seconds(at),
            )?;
        }
        counter(
            &mut encoder,
            "log_lines_dropped",
            "Log lines dropped because the log writer was behind",
            u64::try_from(self.0.log_drops.count()).unwrap_or(u64::MAX),
        )?;
        if let Some(log) = &self.0.decision_log {
            counter(
                &mut encoder,
                "decision_events_dropped",
                "Decision-log events dropped (deny limit reached, or the writer behind)",
                log.dropped(),
            )?;
        }
        labelled_counters(
            &mut encoder,
            "gc_runs",
            "Housekeeping rounds by outcome: done (this sidecar was the leader), skipped \
             (another held the lock), failed",
            "outcome",
            &self.0.gc.runs(),
        )?;
        labelled_counters(
            &mut encoder,
            "gc_removed",
            "Rows housekeeping removed, by table",
            "table",
            &self.0.gc.removed(),
        )?;
        if let Some(provider) = self.0.login.as_ref().and_then(|l| l.provider()) {
            counter(
                &mut encoder,
                "login_provider_key_fetches",
                "Fetches of the login provider's signing keys (JWKS)",
                provider.keys.fetch_count(),
            )?;
            counter(
                &mut encoder,
                "login_provider_key_fetch_failures",
                "Failed fetches of the login provider's signing keys",
                provider.keys.failed_fetches(),
            )?;
            gauge(
                &mut encoder,
                "login_provider_keys_stale",
                "1 while the login provider's keys cannot be refreshed (the last good set \
                 still verifies), else 0",
                f64::from(u8::from(provider.keys.failing_since().is_some())),
            )?;
        }
        Ok(())
    }
}
