//! A gRPC load generator for ext_authz servers: drives `envoy.service.auth.v3.Authorization/
//! Check` directly (no Envoy), at a fixed rate or as fast as the server answers, and reports
//! throughput and latency percentiles from an HDR histogram. Bench-only.
//!
//! The requests are shaped as Envoy 1.40 sends them with the shipped `envoy/envoy.yaml`
//! (`encode_raw_headers: true`): only the allowed headers, as raw bytes in `header_map`; peers,
//! request id, time, scheme, protocol and empty metadata contexts filled in. Each scenario
//! has the outcome portcullis should give for `examples/policy.yaml`; answers that differ are
//! counted as `mismatched` (a no-op server allows everything, so there only the allow
//! scenarios match).
//!
//! Fixed rate is open-loop: request `i` is due at `start + i / rate` whether or not earlier
//! ones have answered, and its latency counts from when it was due, so a server (or a
//! generator) that falls behind is charged for the wait (no coordinated omission).
//! `--concurrency` bounds the requests in flight; `--connections` HTTP/2 connections carry
//! them (Envoy uses one per worker).
//!
//! ```text
//! cargo run --release --example loadgen -- --target 127.0.0.1:9001 --rate max \
//!     --concurrency 32 --duration 10s --jwt "$TOKEN" --mix jwt-header
//! cargo run --release --example loadgen -- --target 127.0.0.1:9001 --rate 5000 \
//!     --jwt "$TOKEN" --api-token "$API_TOKEN" --mix all
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, HeaderMap, HeaderValue, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    attribute_context, AttributeContext, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::protobuf::Timestamp;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "Drive ext_authz Check at a fixed or the maximum rate and report latency")]
struct Args {
    /// The ext_authz server, HOST:PORT (loopback in the harness).
    #[arg(long, default_value = "127.0.0.1:9001")]
    target: String,
    /// Requests per second, or `max` for as many as `--concurrency` workers get answered.
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Most requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// How long to measure, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before the measurement (fills caches, opens connections).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Scenarios and weights: `jwt-header=3,deny-401=1`, a list (`jwt-header,api-token`: equal
    /// weights) or `all` (every scenario whose credential was given).
    #[arg(long, default_value = "jwt-header")]
    mix: String,
    /// The JWT for the jwt-header, jwt-cookie and deny-403 scenarios (or env LOADGEN_JWT).
    #[arg(long, env = "LOADGEN_JWT", hide_env_values = true)]
    jwt: Option<String>,
    /// The API token for the api-token scenario (or env LOADGEN_API_TOKEN).
    #[arg(long, env = "LOADGEN_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// The cookie a JWT is sent in (`jwt.cookie_name`).
    #[arg(long, default_value = "jwt-token")]
    cookie_name: String,
    /// The Host of every request.
    #[arg(long, default_value = "app.example.com")]
    host: String,
    /// Per-request gRPC deadline; a request over it counts as an error.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print one `RESULT key=value ...` line for scripts after the report.
    #[arg(long)]
    result_line: bool,
}

#[derive(Debug, Clone, Copy)]
enum Rate {
    Max,
    PerSecond(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "{s:?} is not `max` or a positive number of requests/s"
            )),
        }
    }
}

/// What a server answered, by HTTP status Envoy would send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Allow,
    Denied(i32),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Allow => f.write_str("allow"),
            Outcome::Denied(code) => write!(f, "deny {code}"),
        }
    }
}

fn outcome(response: &CheckResponse) -> Outcome {
    let code = response.status.as_ref().map_or(0, |s| s.code);
    if code == tonic::Code::Ok as i32 {
        return Outcome::Allow;
    }
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => {
            // Envoy's default for a denial without a status is 403.
            Outcome::Denied(d.status.as_ref().map_or(403, |s| s.code))
        }
        _ => Outcome::Denied(403),
    }
}

/// One kind of request, and what portcullis should answer for `examples/policy.yaml`.
struct Scenario {
    name: &'static str,
    request: CheckRequest,
    expected: Outcome,
}

const SCENARIOS: [&str; 6] = [
    "jwt-header",
    "jwt-cookie",
    "api-token",
    "deny-401",
    "deny-403",
    "invalid-path",
];

fn socket(address: &str, port: u32) -> Option<attribute_context::Peer> {
    Some(attribute_context::Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: address.to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    })
}

/// A CheckRequest as Envoy sends it with `encode_raw_headers: true`.
fn check_request(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: socket("127.0.0.1", 54321),
            destination: socket("127.0.0.1", 10000),
            request: Some(attribute_context::Request {
                time: Some(Timestamp {
                    seconds: i64::try_from(now.as_secs()).unwrap_or(0),
                    nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
                }),
                http: Some(attribute_context::HttpRequest {
                    id: "12777018769857034341".to_owned(),
                    method: method.to_owned(),
                    header_map: Some(HeaderMap {
                        headers: headers
                            .iter()
                            .map(|(k, v)| HeaderValue {
                                key: (*k).to_owned(),
                                raw_value: v.as_bytes().to_vec(),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                    path: path.to_owned(),
                    host: host.to_owned(),
                    scheme: "http".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    ..Default::default()
                }),
            }),
            metadata_context: Some(Metadata::default()),
            route_metadata_context: Some(Metadata::default()),
            ..Default::default()
        }),
    }
}

fn scenario(name: &str, args: &Args) -> anyhow::Result<Scenario> {
    let jwt = || {
        args.jwt
            .as_deref()
            .with_context(|| format!("scenario {name} needs --jwt (or LOADGEN_JWT)"))
    };
    let host = args.host.as_str();
    let (request, expected) = match name {
        "jwt-header" => (
            check_request(
                "GET",
                host,
                "/api/v1/roles/42/users?page=2",
                &[("authorization", &format!("Bearer {}", jwt()?))],
            ),
            Outcome::Allow,
        ),
        "jwt-cookie" => (
            check_request(
                "GET",
                host,
                "/api/v1/roles",
                &[(
                    "cookie",
                    &format!("theme=dark; {}={}; lang=en", args.cookie_name, jwt()?),
                )],
            ),
            Outcome::Allow,
        ),
        "api-token" => {
            let token = args
                .api_token
                .as_deref()
                .context("scenario api-token needs --api-token (or LOADGEN_API_TOKEN)")?;
            (
                check_request("GET", host, "/api/v1/roles", &[("x-api-token", token)]),
                Outcome::Allow,
            )
        }
        // No credential on a path that needs one.
        "deny-401" => (
            check_request("GET", host, "/api/v1/roles", &[]),
            Outcome::Denied(401),
        ),
        // A valid JWT, a method no permission grants.
        "deny-403" => (
            check_request(
                "DELETE",
                host,
                "/api/v1/roles/42",
                &[("authorization", &format!("Bearer {}", jwt()?))],
            ),
            Outcome::Denied(403),
        ),
        // A matrix parameter: refused before the credential is looked at.
        "invalid-path" => (
            check_request("GET", host, "/api/v1/roles/42;jsessionid=x/users", &[]),
            Outcome::Denied(403),
        ),
        other => bail!(
            "unknown scenario {other:?}; known: {}",
            SCENARIOS.join(", ")
        ),
    };
    Ok(Scenario {
        name: SCENARIOS
            .iter()
            .copied()
            .find(|s| *s == name)
            .unwrap_or("unknown"),
        request,
        expected,
    })
}

/// The scenarios of `--mix` and a schedule repeating each as often as its weight.
fn mix(args: &Args) -> anyhow::Result<(Vec<Scenario>, Vec<usize>)> {
    let mut entries: Vec<(String, usize)> = Vec::new();
    if args.mix == "all" {
        for name in SCENARIOS {
            let needs_jwt = matches!(name, "jwt-header" | "jwt-cookie" | "deny-403");
            if (needs_jwt && args.jwt.is_none())
                || (name == "api-token" && args.api_token.is_none())
            {
                continue;
            }
            entries.push((name.to_owned(), 1));
        }
    } else {
        for item in args.mix.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, weight) = match item.split_once('=') {
                Some((n, w)) => (
                    n,
                    w.parse::<usize>()
                        .with_context(|| format!("weight of {n} in --mix"))?,
                ),
                None => (item, 1),
            };
            if weight > 0 {
                entries.push((name.to_owned(), weight));
            }
        }
    }
    if entries.is_empty() {
        bail!("--mix names no scenario");
    }
    let scenarios = entries
        .iter()
        .map(|(name, _)| scenario(name, args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Interleaved, so that weights 3:1 send a b a a a b ..., not a a a b.
    let mut left: Vec<usize> = entries.iter().map(|(_, w)| *w).collect();
    let mut schedule = Vec::with_capacity(left.iter().sum());
    while schedule.len() < schedule.capacity() {
        for (i, n) in left.iter_mut().enumerate() {
            if *n > 0 {
                schedule.push(i);
                *n -= 1;
            }
        }
    }
    Ok((scenarios, schedule))
}

/// What one worker (or the whole run) saw.
struct Stats {
    all: Histogram<u64>,
    by_scenario: Vec<Histogram<u64>>,
    outcomes: BTreeMap<(usize, Outcome), u64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    /// Empty stats for `scenarios` scenarios, with histograms shaped like `empty`.
    fn new(empty: &Histogram<u64>, scenarios: usize) -> Self {
        Stats {
            all: empty.clone(),
            by_scenario: (0..scenarios).map(|_| empty.clone()).collect(),
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, scenario: usize, latency: Duration, result: Result<Outcome, String>) {
        match result {
            Ok(o) => {
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.all.saturating_record(micros);
                if let Some(h) = self.by_scenario.get_mut(scenario) {
                    h.saturating_record(micros);
                }
                *self.outcomes.entry((scenario, o)).or_default() += 1;
            }
            Err(e) => *self.errors.entry(e).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Stats) {
        let _ = self.all.add(&other.all);
        for (mine, theirs) in self.by_scenario.iter_mut().zip(&other.by_scenario) {
            let _ = mine.add(theirs);
        }
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

struct Plan {
    scenarios: Vec<Scenario>,
    schedule: Vec<usize>,
    clients: Vec<AuthorizationClient<Channel>>,
    timeout: Duration,
    /// 1 µs to 60 s at 3 significant figures; longer latencies are clamped to 60 s.
    empty: Histogram<u64>,
}

impl Plan {
    fn stats(&self) -> Stats {
        Stats::new(&self.empty, self.scenarios.len())
    }

    async fn send(&self, n: usize) -> (usize, Result<Outcome, String>) {
        let which = self.schedule[n % self.schedule.len()];
        let mut client = self.clients[n % self.clients.len()].clone();
        let mut request = tonic::Request::new(self.scenarios[which].request.clone());
        request.set_timeout(self.timeout);
        let result = match client.check(request).await {
            Ok(response) => Ok(outcome(response.get_ref())),
            Err(status) => Err(format!("grpc {:?}", status.code())),
        };
        (which, result)
    }
}

/// `--concurrency` workers, each sending its next request when the last one is answered.
async fn run_max(plan: Arc<Plan>, concurrency: usize, duration: Duration) -> (Stats, Duration) {
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let plan = plan.clone();
        workers.push(tokio::spawn(async move {
            let mut stats = plan.stats();
            let mut n = w;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let (which, result) = plan.send(n).await;
                stats.record(which, sent.elapsed(), result);
                n += concurrency;
            }
            stats
        }));
    }
    let mut total = plan.stats();
    for w in workers {
        if let Ok(stats) = w.await {
            total.merge(stats);
        }
    }
    (total, start.elapsed())
}

/// Open loop at `rate`: request `n` is due at `start + n / rate`; latency counts from then.
async fn run_fixed(
    plan: Arc<Plan>,
    rate: f64,
    concurrency: usize,
    duration: Duration,
) -> (Stats, Duration) {
    let stats = Arc::new(Mutex::new(plan.stats()));
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    // tokio's timer has millisecond resolution: send what is due within the next millisecond
    // now, rather than up to a millisecond late.
    let slack = Duration::from_millis(1);
    let total = (duration.as_secs_f64() * rate) as usize;
    // Past this, stop sending: a server that stopped answering must not keep the run going.
    let give_up = start + duration + plan.timeout;
    let mut skipped = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + period.mul_f64(n as f64);
        if Instant::now() > give_up {
            skipped = (total - n) as u64;
            break;
        }
        if due > Instant::now() + slack {
            tokio::time::sleep_until((due - slack).into()).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let plan = plan.clone();
        let stats = stats.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let (which, result) = plan.send(n).await;
            // Early (within the slack): from when it was sent; late: from when it was due.
            let from = sent.min(due);
            if let Ok(mut s) = stats.lock() {
                s.record(which, from.elapsed(), result);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let mut stats = match stats.lock() {
        Ok(mut s) => std::mem::replace(&mut *s, plan.stats()),
        Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), plan.stats()),
    };
    if skipped > 0 {
        stats.errors.insert(
            "not sent: the server fell too far behind".to_owned(),
            skipped,
        );
    }
    (stats, elapsed)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report(args: &Args, plan: &Plan, stats: &Stats, elapsed: Duration) {
    let completed = stats.all.len();
    let errors: u64 = stats.errors.values().sum();
    let throughput = completed as f64 / elapsed.as_secs_f64();
    let mismatched: u64 = stats
        .outcomes
        .iter()
        .filter(|((s, o), _)| plan.scenarios[*s].expected != *o)
        .map(|(_, n)| n)
        .sum();
    let rate = match args.rate {
        Rate::Max => "max".to_owned(),
        Rate::PerSecond(r) => format!("{r}/s"),
    };
    println!(
        "target {} rate {rate} concurrency {} connections {} duration {:.1}s",
        args.target,
        args.concurrency,
        args.connections,
        elapsed.as_secs_f64()
    );
    println!(
        "completed {completed}  errors {errors}  mismatched {mismatched}  throughput {throughput:.0}/s"
    );
    let all = &stats.all;
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(all, 0.5),
        ms(all, 0.9),
        ms(all, 0.99),
        ms(all, 0.999),
        all.max() as f64 / 1000.0
    );
    for (i, s) in plan.scenarios.iter().enumerate() {
        let h = &stats.by_scenario[i];
        let got: Vec<String> = stats
            .outcomes
            .iter()
            .filter(|((si, _), _)| *si == i)
            .map(|((_, o), n)| format!("{o}: {n}"))
            .collect();
        println!(
            "  {:<13} expect {:<9} got [{}]  p50 {:.3}  p99 {:.3}",
            s.name,
            s.expected.to_string(),
            got.join(", "),
            ms(h, 0.5),
            ms(h, 0.99)
        );
    }
    for (e, n) in &stats.errors {
        println!("  error {e}: {n}");
    }
    if args.result_line {
        println!(
            "RESULT rps={throughput:.0} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} completed={completed} errors={errors} mismatched={mismatched}",
            ms(all, 0.5),
            ms(all, 0.9),
            ms(all, 0.99),
            ms(all, 0.999)
        );
    }
}

async fn run(plan: Arc<Plan>, args: &Args, duration: Duration) -> (Stats, Duration) {
    match args.rate {
        Rate::Max => run_max(plan, args.concurrency, duration).await,
        Rate::PerSecond(r) => run_fixed(plan, r, args.concurrency, duration).await,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    let (scenarios, schedule) = mix(&args)?;
    let endpoint = Endpoint::from_shared(format!("http://{}", args.target))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", args.target))?;
        clients.push(AuthorizationClient::new(channel));
    }
    let plan = Arc::new(Plan {
        scenarios,
        schedule,
        clients,
        timeout: args.timeout,
        empty: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    });
    if !args.warmup.is_zero() {
        run(plan.clone(), &args, args.warmup).await;
    }
    let (stats, elapsed) = run(plan.clone(), &args, args.duration).await;
    report(&args, &plan, &stats, elapsed);
    Ok(())
}
