//! Composition root: builds the store, identity, snapshot handle and servers from a `Config`,
//! starts the reloader (`reload`), the admin endpoint (`admin`), the last-used writer
//! (`usage`) and housekeeping (`housekeeping`), and shuts down gracefully. No rules live here.

mod jobs;
mod observe;
mod refresh;
mod transport;

pub use observe::{event, replay};

pub use observe::decisions::{DecisionLog, DecisionWriter, Output as DecisionOutput};
pub use observe::metrics::Metrics;

/// Where `log.decisions` sends events (`None`: off).
pub fn decision_output(config: &crate::config::DecisionLogConfig) -> Option<DecisionOutput> {
    DecisionOutput::parse(config.output.trim())
}
pub use refresh::reload::{next_snapshot, Next, RefreshError, CHECK_SERVICE_NAME};
pub use refresh::status::ReloadStatus;
pub use transport::shutdown_signal;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwapOption;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::authz::{Authorizer, SnapshotHandle};
use crate::check::CheckService;
use crate::config::Config;
use crate::grpc::AuthorizationService;
use crate::identity::Identifier;
use crate::login::LoginService;
use crate::store::{Dialect, PolicyStore, SqlStore};
use jobs::remote_keys::RemoteIssuer;
use refresh::reload::{set_health, Reloader};
use refresh::shadow::ShadowReload;
use transport::{incoming, HTTP2_KEEPALIVE_TIMEOUT};

/// Loads keys and builds the identifier; used by `serve`, `check` and `config check`.
pub fn identifier(config: &Config) -> anyhow::Result<Identifier> {
    Ok(identifier_parts(config)?.0)
}

/// The identifier and the outside issuers whose keys must be kept fresh (by `serve`).
fn identifier_parts(config: &Config) -> anyhow::Result<(Identifier, Vec<RemoteIssuer>)> {
    // portcullis's own login keys verify too, so Check accepts the tokens it mints.
    let own = match &config.login {
        Some(login) => crate::keyring::login_verifying_keys(login).context("login keys")?,
        None => Vec::new(),
    };
    let mut jwt = config.effective_jwt();
    let keys =
        crate::keyring::load_with(&jwt, own, |k| std::env::var(k).ok()).context("jwt keys")?;
    let remote: Vec<RemoteIssuer> = config
        .remote_issuers()
        .iter()
        .map(RemoteIssuer::new)
        .collect();
    let keys = if remote.is_empty() {
        keys
    } else {
        // Each key now pins its own issuer and audience; the claim rules pin none.
        let local = jwt
            .issuer
            .take()
            .map(|issuer| crate::identity::IssuerBinding {
                issuer,
                audience: std::mem::take(&mut jwt.audience),
            });
        keys.with_remote(remote.iter().map(|r| r.keys.clone()).collect(), local)
    };
    Ok((
        Identifier::with_api_tokens(keys, &jwt, &config.api_tokens),
        remote,
    ))
}

/// Connects to the configured store; the embedded SQLite database is migrated on open.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let store = SqlStore::connect(
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
    admin_auth: observe::admin::AdminAuth,
    /// What `/status` says about the snapshot and the store, and who reports to it.
    status: Arc<Mutex<ReloadStatus>>,
    store_health: refresh::health::StoreHealth,
    /// The login endpoints and their listener, when `login` is configured.
    login: Option<(TcpListener, Arc<LoginService>)>,
    /// The HTTP ext_authz listener and where it reads the request to decide from.
    http_authz: Option<(TcpListener, crate::http_authz::RequestSource)>,
    /// Outside issuers whose keys are fetched and kept fresh.
    remote_issuers: Vec<RemoteIssuer>,
    store: SqlStore,
    /// Check, with the browser rules, `forward_credential` and cookie renewal.
    check: CheckService,
    identifier: Arc<Identifier>,
    snapshot: SnapshotHandle,
    /// The candidate policy's snapshot, evaluated beside `snapshot` and never enforced.
    shadow: SnapshotHandle,
    usage_rx: tokio::sync::mpsc::Receiver<(String, i64)>,
    reload_interval: Duration,
    gc_interval: Option<Duration>,
    last_used_flush: Duration,
    shutdown_grace: Duration,
    max_concurrent_checks: usize,
    http2_keepalive: Duration,
    log_drops: LogDrops,
    /// The decision log and its writer, when `log.decisions.output` is not `off`.
    decisions: Option<(Arc<DecisionLog>, DecisionWriter)>,
    /// The in-process filter's bundle, served on the admin endpoint.
    bundle: Arc<observe::bundle::BundleSource>,
}

/// How many log lines the non-blocking writer has dropped because stderr was too slow.
#[derive(Clone, Default)]
pub struct LogDrops(Option<tracing_appender::non_blocking::ErrorCounter>);

impl LogDrops {
    pub fn new(counter: tracing_appender::non_blocking::ErrorCounter) -> Self {
        LogDrops(Some(counter))
    }

    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |c| c.dropped_lines())
    }
}

/// Token uses waiting to be written; beyond this, uses are dropped (last-used is advisory).
const USAGE_QUEUE: usize = 4096;

impl Server {
    /// Validates everything, connects the store and binds the port. Fails before binding on
    /// bad configuration.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        // Keys first: bad key material fails before anything is opened or bound.
        let (mut identifier, remote_issuers) = identifier_parts(config)?;
        let admin_token = crate::keyring::load_admin_token(&config.server)?;
        let store = open_store(config).await?;
        if identifier.keys().is_empty() {
            tracing::warn!("no jwt keys configured: every JWT will be refused");
        }
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let status = Arc::new(Mutex::new(ReloadStatus::default()));
        let store_health = refresh::health::StoreHealth::new(status.clone());
        let (usage_tx, usage_rx) = tokio::sync::mpsc::channel(USAGE_QUEUE);
        identifier.report_usage_to(usage_tx);
        let identifier = Arc::new(identifier);
        let snapshot: SnapshotHandle = Arc::new(ArcSwapOption::empty());
        let shadow: SnapshotHandle = Arc::new(ArcSwapOption::empty());
        let authorizer = Arc::new(
            Authorizer::new(snapshot.clone(), identifier.clone())
                .with_shadow(shadow.clone())
                .with_permission_source(config.jwt.permissions_from)
                .with_subject_claim(config.jwt.subject_claim),
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
        let login = match (&config.login, config.server.http_listen) {
            (Some(login), Some(addr)) => {
                let material = crate::keyring::load_login(login, |k| std::env::var(k).ok())
                    .context("login")?;
                let service = LoginService::new(
                    config,
                    material.keys,
                    material.client_secret,
                    &material.state_secret,
                    Arc::new(refresh::watched::WatchedLogin {
                        store: store.clone(),
                        health: store_health.clone(),
                    }),
                    snapshot.clone(),
                )?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (server.http_listen)"))?;
                Some((listener, Arc::new(service)))
            }
            _ => None,
        };
        let http_authz = match config.server.http_authz_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} (server.http_authz_listen)")
                })?;
                let source = if config.server.http_authz_trust_forwarded {
                    crate::http_authz::RequestSource::Forwarded
                } else {
                    crate::http_authz::RequestSource::CheckRequest
                };
                Some((listener, source))
            }
            None => None,
        };
        let mut check = CheckService::new(authorizer)
            .with_config(config)
            .context("login.public_url")?;
        if let Some((_, service)) = &login {
            check = check.with_renewal(service.clone());
        }
        let bundle = Arc::new(observe::bundle::BundleSource::new(config, snapshot.clone()));
        Ok(Server {
            bundle,
            listener,
            admin_listener,
            admin_auth: observe::admin::AdminAuth::new(
                admin_token.as_ref(),
                config.server.admin_metrics_open,
            ),
            status,
            store_health,
            login,
            http_authz,
            remote_issuers,
            store,
            check,
            identifier,
            snapshot,
            shadow,
            usage_rx,
            reload_interval: config.database.reload_interval,
            gc_interval: config.database.gc_every(),
            last_used_flush: config.api_tokens.last_used_flush,
            shutdown_grace: config.server.shutdown_grace,
            max_concurrent_checks: config.server.max_concurrent_checks,
            http2_keepalive: config.server.http2_keepalive,
            log_drops: LogDrops::default(),
            decisions: observe::decisions::decision_log(&config.log.decisions),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Reports the log writer's dropped lines on `/status` and at shutdown.
    pub fn with_log_drops(mut self, drops: LogDrops) -> Self {
        self.log_drops = drops;
        self
    }

    /// Where the login endpoints listen, when they are enabled (tests bind port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.login.as_ref()?.0.local_addr().ok()
    }

    /// Where the admin endpoint listens, when it is enabled (tests bind port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref()?.local_addr().ok()
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
        let status = self.status.clone();
        let shared: Arc<dyn PolicyStore> = Arc::new(self.store.clone());
        let api_tokens = self.identifier.api_token_cache();
        let reloader = Reloader {
            store: shared.clone(),
            snapshot: self.snapshot.clone(),
            api_tokens: api_tokens.clone(),
            health: reporter.clone(),
            status: status.clone(),
            store_health: self.store_health.clone(),
            interval: self.reload_interval,
            shadow: ShadowReload::new(self.shadow.clone()),
        };
        let reloader = tokio::spawn(reloader.run(stop_rx.clone()));
        let login_service = self.login.as_ref().map(|(_, s)| s.clone());
        let issuers_ready: Vec<_> = self
            .remote_issuers
            .iter()
            .map(|r| r.ready.clone())
            .collect();
        let issuer_tasks: Vec<_> = self
            .remote_issuers
            .into_iter()
            .map(|r| tokio::spawn(r.run(stop_rx.clone())))
            .collect();
        let login = match self.login {
            Some((listener, service)) => {
                if let Ok(http_addr) = listener.local_addr() {
                    tracing::info!(%http_addr, "serving login endpoints");
                }
                let connect = tokio::spawn(service.clone().connect_provider(stop_rx.clone()));
                let mut stop = stop_rx.clone();
                let serve = axum::serve(listener, crate::login::router(service))
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    });
                let server = tokio::spawn(async move {
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "login endpoints failed");
                    }
                });
                Some((connect, server))
            }
            None => None,
        };
        let gc_counts = Arc::new(jobs::housekeeping::GcCounts::default());
        let housekeeping = self.gc_interval.map(|every| {
            let (store, health) = (self.store.clone(), self.store_health.clone());
            let task =
                jobs::housekeeping::run(store, every, gc_counts.clone(), health, stop_rx.clone());
            tokio::spawn(task)
        });
        // Metrics live where they are served: on the admin endpoint, when there is one.
        let metrics = self.admin_listener.as_ref().map(|_| {
            Arc::new(Metrics::new(observe::metrics::Sources {
                identify: self.identifier.counts(),
                status: status.clone(),
                log_drops: self.log_drops.clone(),
                login: login_service.clone(),
                decision_log: self.decisions.as_ref().map(|(log, _)| log.clone()),
                gc: gc_counts.clone(),
            }))
        });
        // One Check service for gRPC and the HTTP mode, observed by the metrics and the
        // decision log.
        let mut service = self.check;
        if let Some(metrics) = &metrics {
            service = service.with_observer(metrics.clone());
        }
        let decision_writer = match self.decisions {
            Some((log, writer)) => {
                service = service.with_observer(log);
                Some(tokio::spawn(writer.run(stop_rx.clone())))
            }
            None => None,
        };
        let service = Arc::new(service);
        let http_authz = self.http_authz.map(|(listener, source)| {
            if let Ok(http_authz_addr) = listener.local_addr() {
                tracing::info!(%http_authz_addr, ?source, "serving HTTP ext_authz");
            }
            let service = service.clone();
            let mut stop = stop_rx.clone();
            // One small response per check: never held back by Nagle's algorithm.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, crate::http_authz::router(service, source))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
            tokio::spawn(async move {
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP ext_authz failed");
                }
            })
        });
        let admin = match (self.admin_listener, &metrics) {
            (Some(listener), Some(metrics)) => {
                if let Ok(admin_addr) = listener.local_addr() {
                    tracing::info!(%admin_addr, "serving admin endpoint");
                }
                Some(tokio::spawn(observe::admin::serve_admin(
                    listener,
                    observe::admin::Admin {
                        status,
                        login: login_service,
                        issuers_ready,
                        log_drops: self.log_drops.clone(),
                        metrics: metrics.clone(),
                        bundle: self.bundle.clone(),
                        auth: self.admin_auth,
                    },
                    stop_rx.clone(),
                )))
            }
            _ => None,
        };
        let usage_writer = tokio::spawn(jobs::usage::write_token_use(
            shared,
            self.store_health.clone(),
            self.usage_rx,
            self.last_used_flush,
            stop_rx.clone(),
        ));

        let mut drain_rx = stop_rx.clone();
        let drained = async move {
            let _ = drain_rx.wait_for(|stop| *stop).await;
        };
        let grace = self.shutdown_grace;
        tracing::info!(%addr, "serving ext_authz and health");
        let server = tonic::transport::Server::builder()
            // Overload is refused at once (RESOURCE_EXHAUSTED; Envoy answers its
            // status_on_error, 503), never queued past Envoy's timeout.
            .concurrency_limit_per_connection(self.max_concurrent_checks)
            .load_shed(true)
            .http2_keepalive_interval(Some(self.http2_keepalive))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .add_service(health_service)
            .add_service(AuthorizationService::from_shared(service))
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
        if let Some(writer) = decision_writer {
            let _ = writer.await;
        }
        let _ = usage_writer.await;
        if let Some(task) = housekeeping {
            let _ = task.await;
        }
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Some(http_authz) = http_authz {
            let _ = http_authz.await;
        }
        for task in issuer_tasks {
            let _ = task.await;
        }
        if let Some((connect, server)) = login {
            let _ = connect.await;
            let _ = server.await;
        }
        self.store.close().await;
        let dropped = self.log_drops.count();
        if dropped > 0 {
            tracing::warn!(dropped, "log lines dropped because stderr was too slow");
        }
        Ok(())
    }
}
