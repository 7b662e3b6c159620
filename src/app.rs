//! Composition root: builds the store, identity, snapshot handle and servers from a `Config`,
//! keeps the snapshot fresh off the request path, and shuts down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::authz::{Authorizer, SnapshotHandle};
use crate::config::Config;
use crate::grpc::{AuthorizationServer, CheckService};
use crate::identity::Identifier;
use crate::store::{ChangeListener, Dialect, Store};

/// The gRPC service name health is reported under (besides the overall "").
pub const CHECK_SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// Loads keys and builds the identifier; used by `serve`, `check` and `config check`.
pub fn identifier(config: &Config) -> anyhow::Result<Identifier> {
    let keys = crate::keyring::load(&config.jwt, |k| std::env::var(k).ok()).context("jwt keys")?;
    Ok(Identifier::new(keys, &config.jwt))
}

/// An identifier that also resolves API tokens against `store`.
pub fn identifier_with_store(config: &Config, store: Store) -> anyhow::Result<Identifier> {
    let keys = crate::keyring::load(&config.jwt, |k| std::env::var(k).ok()).context("jwt keys")?;
    Ok(Identifier::with_api_tokens(
        keys,
        &config.jwt,
        &config.api_tokens,
        Some(Arc::new(store)),
    ))
}

/// Connects to the configured store; the embedded SQLite database is migrated on open.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(
        config.database.url.expose(),
        config.database.max_connections,
    )
    .await?;
    if store.dialect() == Dialect::Sqlite {
        store.migrate().await?;
    }
    Ok(store)
}

/// A bound, not yet serving, portcullis.
pub struct Server {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    store: Store,
    authorizer: Arc<Authorizer>,
    usage_rx: tokio::sync::mpsc::Receiver<(String, i64)>,
    reload_interval: Duration,
    last_used_flush: Duration,
    shutdown_grace: Duration,
}

/// Token uses waiting to be written; beyond this, uses are dropped (last-used is advisory).
const USAGE_QUEUE: usize = 4096;

impl Server {
    /// Validates everything, connects the store and binds the port. Fails before binding on
    /// bad configuration.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        // Keys first: bad key material fails before anything is opened or bound.
        identifier(config)?;
        let store = open_store(config).await?;
        let mut identifier = identifier_with_store(config, store.clone())?;
        if identifier.keys().is_empty() {
            tracing::warn!("no jwt keys configured: every JWT will be refused");
        }
        let (usage_tx, usage_rx) = tokio::sync::mpsc::channel(USAGE_QUEUE);
        identifier.report_usage_to(usage_tx);
        let identifier = Arc::new(identifier);
        let snapshot: SnapshotHandle = Arc::new(ArcSwapOption::empty());
        let authorizer = Arc::new(
            Authorizer::new(snapshot, identifier)
                .with_permission_source(config.jwt.permissions_from),
        );
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let admin_listener = match config.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?,
            ),
            None => None,
        };
        Ok(Server {
            listener,
            admin_listener,
            store,
            authorizer,
            usage_rx,
            reload_interval: config.database.reload_interval,
            last_used_flush: config.api_tokens.last_used_flush,
            shutdown_grace: config.server.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, drains in-flight checks
    /// (bounded by the configured grace) and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;

        let (stop_tx, stop_rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(ReloadStatus::default()));
        let reloader = tokio::spawn(keep_fresh(
            self.store.clone(),
            self.authorizer.clone(),
            reporter.clone(),
            status.clone(),
            self.reload_interval,
            stop_rx.clone(),
        ));
        let admin = match self.admin_listener {
            Some(listener) => {
                if let Ok(admin_addr) = listener.local_addr() {
                    tracing::info!(%admin_addr, "serving admin endpoint");
                }
                Some(tokio::spawn(serve_admin(listener, status, stop_rx.clone())))
            }
            None => None,
        };
        let usage_writer = tokio::spawn(write_token_use(
            self.store.clone(),
            self.usage_rx,
            self.last_used_flush,
            stop_rx.clone(),
        ));

        let mut drain_rx = stop_rx.clone();
        let drained = async move {
            let _ = drain_rx.wait_for(|stop| *stop).await;
        };
        let grace = self.shutdown_grace;
        let service = CheckService::new(self.authorizer.clone());
        tracing::info!(%addr, "serving ext_authz and health");
        let server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(AuthorizationServer::new(service))
            .serve_with_incoming_shutdown(incoming(self.listener), drained);
        let mut server = tokio::spawn(server);

        tokio::select! {
            result = &mut server => {
                let _ = stop_tx.send(true);
                result.context("server task")?.context("server")?;
                return Ok(());
            }
            () = shutdown => {}
        }
        tracing::info!("shutting down: reporting NOT_SERVING and draining");
        set_health(&reporter, ServingStatus::NotServing).await;
        let _ = stop_tx.send(true);
        match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result.context("server task")?.context("server")?,
            Err(_) => {
                tracing::warn!(grace = %humantime::format_duration(grace), "drain timed out");
                server.abort();
            }
        }
        let _ = reloader.await;
        let _ = usage_writer.await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        self.store.close().await;
        Ok(())
    }
}

/// TCP keepalive probe interval on accepted connections: a silently dead Envoy connection is
/// noticed and closed instead of being kept forever.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Accepted connections with `TCP_NODELAY` and keepalive set. tonic ignores its own
/// `tcp_nodelay` setting for a caller-supplied listener, and without it every small Check
/// response waits for Nagle's algorithm to meet the peer's delayed ACK (about 40 ms).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(CHECK_SERVICE_NAME, status)
        .await;
}

/// Loads the snapshot at start and whenever the store's policy version changes. A snapshot
/// that fails to load or compile leaves the previous one serving; an outage is logged once.
async fn keep_fresh(
    store: Store,
    authorizer: Arc<Authorizer>,
    reporter: HealthReporter,
    status: Arc<Mutex<ReloadStatus>>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let snapshot = authorizer.snapshot().clone();
    let mut failing: Option<String> = None;
    let mut listener: Option<ChangeListener> = None;
    let mut wait = interval;
    loop {
        match refresh(&store, &snapshot).await {
            Ok(loaded) => {
                if let Some(version) = loaded {
                    // A new version may be a revocation, a disabled owner or changed roles.
                    authorizer.identifier().forget_api_tokens();
                    tracing::info!(version, "policy snapshot loaded");
                    set_health(&reporter, ServingStatus::Serving).await;
                }
                if failing.take().is_some() {
                    tracing::info!("policy store reachable again");
                }
                wait = interval;
                if let Ok(mut s) = status.lock() {
                    s.store_reachable = true;
                    s.last_error = None;
                    if let Some(version) = loaded {
                        s.version = Some(version);
                        s.loaded_at = Some(SystemTime::now());
                    }
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                // Once per outage, not once per attempt; later causes only at debug.
                match &failing {
                    None => {
                        tracing::error!(error = %message, serving_version = snapshot.load().as_ref().map(|s| s.version()), "cannot refresh policy; keeping the last good snapshot")
                    }
                    Some(previous) if *previous != message => {
                        tracing::debug!(error = %message, "policy refresh still failing")
                    }
                    Some(_) => {}
                }
                failing = Some(message.clone());
                wait = (wait * 2).min(MAX_RETRY_WAIT.max(interval));
                if let Ok(mut s) = status.lock() {
                    s.store_reachable = false;
                    s.last_error = Some(message);
                }
            }
        }
        if listener.is_none() && failing.is_none() {
            match store.listen().await {
                Ok(l) => listener = l,
                Err(e) => {
                    tracing::debug!(error = %crate::error_chain(&e), "cannot listen for policy changes; polling")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = next_change(&mut listener) => {
                if changed.is_err() {
                    listener = None;
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// GETs `/status` from a running portcullis' admin endpoint.
pub async fn fetch_status(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/status")
        .header("host", addr.to_string())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .context("timed out")??;
    let body = response.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&body).context("not a status document")
}

/// Longest pause between attempts while the store is unreachable.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// The next announced change, or never without a listener.
async fn next_change(listener: &mut Option<ChangeListener>) -> Result<(), ()> {
    match listener {
        Some(l) => l.next().await.map(|_| ()).map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// What `/status` reports about the snapshot and the store.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    version: Option<i64>,
    loaded_at: Option<SystemTime>,
    store_reachable: bool,
    last_error: Option<String>,
}

impl ReloadStatus {
    fn to_json(&self) -> serde_json::Value {
        let unix = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        serde_json::json!({
            "serving": self.version.is_some(),
            "policy_version": self.version,
            "snapshot_loaded_at": self.loaded_at.map(unix),
            "snapshot_age_seconds": self.loaded_at.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()),
            "store_reachable": self.store_reachable,
            "last_error": self.last_error,
        })
    }
}

/// The admin endpoint: `/status` (JSON), `/ready` (200 once a snapshot is loaded), `/live`.
async fn serve_admin(
    listener: TcpListener,
    status: Arc<Mutex<ReloadStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let for_status = status.clone();
    let app = axum::Router::new()
        .route(
            "/status",
            get(move || {
                let body = for_status.lock().map(|s| s.to_json()).unwrap_or_default();
                async move { axum::Json(body) }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = status.lock().map(|s| s.version.is_some()).unwrap_or(false);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded\n")
                    }
                }
            }),
        )
        .route("/live", get(|| async { "live\n" }));
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

/// Collects API-token uses and writes last-used times in one batch per `every`, and once
/// more on shutdown. A failed write keeps the batch for the next round.
async fn write_token_use(
    store: Store,
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
            match store.record_token_use(&batch).await {
                Ok(()) => {
                    pending.clear();
                    failing = false;
                }
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

/// Rebuilds the snapshot if the stored version differs from the one serving.
async fn refresh(store: &Store, snapshot: &SnapshotHandle) -> anyhow::Result<Option<i64>> {
    let version = store.policy_version().await?;
    if snapshot
        .load()
        .as_ref()
        .is_some_and(|s| s.version() == version)
    {
        return Ok(None);
    }
    let fresh = store.load_snapshot().await?;
    let loaded = fresh.version();
    snapshot.store(Some(Arc::new(fresh)));
    Ok(Some(loaded))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(server_side.nodelay().unwrap(), "TCP_NODELAY must be set");
        assert!(socket2::SockRef::from(&server_side).keepalive().unwrap());
        drop(client);
    }
}
