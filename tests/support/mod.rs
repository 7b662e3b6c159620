//! Shared harness for integration tests: a real `portcullis serve` process on an ephemeral
//! port with its own SQLite database, the header-echo upstream, real Envoy running the shipped
//! `envoy/envoy.yaml`, and a plain HTTP/1.1 client. No fixed ports and no sleeps for readiness:
//! every start is polled until it answers.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

#[path = "../../examples/echo_upstream.rs"]
mod echo_upstream;
pub mod fronts;
pub mod oidc;
pub mod pg;
pub mod sso;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Seconds since the epoch, as token `iat`s count them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary cargo built for the integration tests. Examples that share this harness (such
/// as `demo_sso`) are not given one; they get the default debug build's path.
pub fn portcullis_bin() -> &'static str {
    option_env!("CARGO_BIN_EXE_portcullis").unwrap_or(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/debug/portcullis"
    ))
}

/// The Envoy binary `make test` installs into the project virtualenv (or `PORTCULLIS_ENVOY`).
pub fn envoy_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_ENVOY") {
        return PathBuf::from(path);
    }
    let path = root().join(".venv/bin/envoy");
    assert!(
        path.exists(),
        "Envoy is not installed at {}: run `make test`, which installs it",
        path.display()
    );
    path
}

/// A config file for portcullis in `dir`: HS256 key, SQLite database, ephemeral port.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let url = format!("sqlite://{}", dir.join("portcullis.db").display());
    write_config_for(dir, &url, "200ms", "token", extra)
}

/// A config file for portcullis in `dir` on the database at `url`.
pub fn write_config_for(
    dir: &Path,
    url: &str,
    reload_interval: &str,
    permissions_from: &str,
    extra: &str,
) -> PathBuf {
    std::fs::write(dir.join("jwt-secret"), SECRET).expect("write secret");
    let config = format!(
        r#"server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  shutdown_grace: 5s
database:
  url: "{url}"
  reload_interval: {reload_interval}
jwt:
  issuer: portcullis-test
  audience: [portcullis]
  keys:
    - kid: test-hs256
      algorithm: HS256
      secret_file: {secret}
  signing_key: test-hs256
  permissions_from: {permissions_from}
api_tokens:
  last_used_flush: 200ms
log:
  level: info,portcullis=debug
{extra}"#,
        secret = dir.join("jwt-secret").display(),
    );
    let path = dir.join("portcullis.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// A config on the database at `url`, migrated, with `examples/policy.yaml` applied.
pub fn prepared_config(
    dir: &Path,
    url: &str,
    reload_interval: &str,
    permissions_from: &str,
) -> PathBuf {
    let config = write_config_for(dir, url, reload_interval, permissions_from, "");
    cli_ok(&config, &["migrate"]);
    let policy = root().join("examples/policy.yaml");
    cli_ok(
        &config,
        &["policy", "apply", policy.to_str().expect("utf-8 path")],
    );
    config
}

/// Runs a portcullis command to completion; returns (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(portcullis_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn cli_ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = cli(config, args);
    assert_eq!(code, 0, "portcullis {args:?} failed: {out}{err}");
    out
}

/// A child process killed on drop, with its stderr collected.
pub struct Proc {
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// `portcullis --config CONFIG serve`, not waited for.
    pub fn spawn_portcullis(config: &Path) -> Self {
        let mut cmd = Command::new(portcullis_bin());
        cmd.arg("--config").arg(config).arg("serve");
        Proc::spawn(cmd)
    }

    /// Any command, its stderr kept like portcullis's.
    pub fn spawn_command(cmd: Command) -> Self {
        Proc::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        Proc { child, log }
    }

    /// Waits for a log line containing `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line {needle:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `portcullis serve`.
pub struct Portcullis {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub config: PathBuf,
}

impl Portcullis {
    /// Starts `serve` with `config` and waits until its health reports SERVING.
    pub async fn start(config: &Path) -> Self {
        let proc = Proc::spawn_portcullis(config);
        let line = proc.wait_for_log("serving ext_authz");
        let p = Self::from_running(proc, &line, config);
        p.wait_serving().await;
        p
    }

    /// Wraps a started `serve` whose "serving ext_authz" log line is `line`.
    pub fn from_running(proc: Proc, line: &str, config: &Path) -> Self {
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no addr in {line:?}"));
        Portcullis {
            proc,
            addr,
            config: config.to_owned(),
        }
    }

    /// Where its admin endpoint listens (from its "serving admin endpoint" log line).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.proc.wait_for_log("serving admin endpoint");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("admin_addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin_addr in {line:?}"))
    }

    pub async fn health(&self) -> Option<i32> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let req = HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".to_owned(),
        };
        client.check(req).await.ok().map(|r| r.into_inner().status)
    }

    pub async fn wait_serving(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.health().await != Some(1) {
            assert!(
                Instant::now() < deadline,
                "portcullis never became SERVING:\n{}",
                self.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The echo upstream on an ephemeral port, served on the test's runtime.
pub async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(echo_upstream::serve(listener));
    addr
}

/// Real Envoy running the shipped config, pointed at our ports.
pub struct Envoy {
    pub proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Envoy {
    pub async fn start(portcullis: SocketAddr, upstream: SocketAddr) -> Self {
        Self::start_with_login(portcullis, upstream, None).await
    }

    /// Like `start`, with the login routes pointed at portcullis's HTTP listener.
    pub async fn start_with_login(
        portcullis: SocketAddr,
        upstream: SocketAddr,
        login: Option<SocketAddr>,
    ) -> Self {
        let mut ports = vec![
            (9001, portcullis.port()),
            (8080, upstream.port()),
            (9901, 0),
            (10000, 0),
        ];
        if let Some(addr) = login {
            ports.push((9003, addr.port()));
        }
        Self::start_file("envoy/envoy.yaml", &ports).await
    }

    /// Real Envoy running the shipped config `file` (relative to the repository root) with
    /// each `port_value: FROM` replaced by `TO` (0 for an ephemeral port). Every FROM must
    /// occur in the file.
    pub async fn start_file(file: &str, ports: &[(u16, u16)]) -> Self {
        let mut replaced = std::fs::read_to_string(root().join(file)).expect(file);
        for (from, to) in ports {
            let original = format!("port_value: {from}");
            assert!(replaced.contains(&original), "{file}: no {original}");
            replaced = replaced.replace(&original, &format!("port_value: {to}"));
        }
        Self::start_yaml(&replaced).await
    }

    /// Envoy running `yaml` (ports already replaced; the admin port may be 0), once it is
    /// ready and its portcullis cluster healthy.
    pub async fn start_yaml(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, yaml).expect("write envoy config");
        let admin_file = dir.path().join("admin-address");
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg("1")
            .arg("-l")
            .arg("warning");
        let proc = Proc::spawn(cmd);
        let deadline = Instant::now() + READY_TIMEOUT;
        let admin = loop {
            if let Ok(a) = std::fs::read_to_string(&admin_file) {
                if !a.trim().is_empty() {
                    break a.trim().to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "envoy did not start:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let admin: SocketAddr = admin.parse().expect("admin address");
        // Ready means the listener is bound and the portcullis cluster passed its health check.
        let port = loop {
            let ready = request(admin.port(), "GET", "/ready", &[])
                .await
                .map(|r| r.status == 200)
                .unwrap_or(false);
            if ready {
                if let Ok(r) = request(admin.port(), "GET", "/listeners?format=json", &[]).await {
                    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                    if let Some(p) = v["listener_statuses"][0]["local_address"]["socket_address"]
                        ["port_value"]
                        .as_u64()
                    {
                        break p as u16;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "envoy never became ready:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let envoy = Envoy {
            proc,
            port,
            _dir: dir,
        };
        envoy.wait_upstream_healthy(admin.port()).await;
        envoy
    }

    async fn wait_upstream_healthy(&self, admin_port: u16) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let clusters = request(admin_port, "GET", "/clusters", &[])
                .await
                .map(|r| r.body)
                .unwrap_or_default();
            let healthy = clusters
                .lines()
                .any(|l| l.starts_with("portcullis::") && l.contains("health_flags::healthy"));
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis cluster never healthy:\n{clusters}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers).await
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// For echo responses: every value the upstream received for `name`.
    pub fn upstream_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`, sent exactly as given (the target is not parsed
/// or normalized, repeated headers stay repeated).
pub async fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "app.example.com");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// portcullis + echo + Envoy over a fresh database holding `examples/policy.yaml`.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub portcullis: Portcullis,
    pub envoy: Envoy,
}

impl Stack {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
        let config = prepared_config(dir.path(), &url, "200ms", "token");
        let portcullis = Portcullis::start(&config).await;
        let echo = start_echo().await;
        let envoy = Envoy::start(portcullis.addr, echo).await;
        Stack {
            dir,
            config,
            portcullis,
            envoy,
        }
    }

    /// Issues an API token with `portcullis token issue ARGS` and waits until portcullis has
    /// loaded it (tokens are resolved from the snapshot); returns (id, token).
    pub async fn api_token(&self, args: &[&str]) -> (String, String) {
        let mut full = vec!["token", "issue"];
        full.extend_from_slice(args);
        let (code, out, err) = cli(&self.config, &full);
        assert_eq!(code, 0, "token issue {args:?}: {out}{err}");
        let id = err
            .split_whitespace()
            .find(|w| w.starts_with("tok_"))
            .unwrap_or_else(|| panic!("no token id in {err:?}"))
            .to_owned();
        let token = out.trim().to_owned();
        // Any identified caller may GET /api/v1/me: 401 only until the token is loaded.
        let deadline = Instant::now() + READY_TIMEOUT;
        while self
            .envoy
            .get("/api/v1/me", &[("x-api-token", &token)])
            .await
            .status
            == 401
        {
            assert!(Instant::now() < deadline, "token {id} never loaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (id, token)
    }

    /// A token for a stored user, minted by `portcullis jwt mint`.
    pub fn token(&self, email: &str) -> String {
        cli_ok(&self.config, &["jwt", "mint", "--user", email])
            .trim()
            .to_owned()
    }
}

/// The HTTP status a Check answers `request` with (200 for an allow, 0 for neither).
pub async fn check_status(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    request: envoy_types::pb::envoy::service::auth::v3::CheckRequest,
) -> u16 {
    use envoy_types::ext_authz::v3::pb::HttpResponse;
    let res = client
        .check(request)
        .await
        .expect("a CheckResponse, never a gRPC error")
        .into_inner();
    match res.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.map(|s| s.code as u16).unwrap_or(0),
        _ => 0,
    }
}

/// A CheckRequest as Envoy sends it without `encode_raw_headers` (headers in the map).
pub fn check_request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::{
        attribute_context, AttributeContext, CheckRequest,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: host.to_owned(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}
