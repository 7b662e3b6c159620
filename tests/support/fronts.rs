//! The proxies in front of portcullis, each running a shipped config with only its ports
//! replaced: Envoy over gRPC (`envoy/envoy.yaml`), Envoy over HTTP (`envoy/envoy-http.yaml`,
//! `http_service`) and nginx (`examples/nginx.conf`, `auth_request`); and the one case table
//! every one of them must pass (the end-to-end tests of `e2e_envoy.rs`, for all three).
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{cli_ok, request, root, Envoy, Portcullis, Proc, Response};

/// Which proxy, and so which differences the case table allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    EnvoyGrpc,
    EnvoyHttp,
    Nginx,
}

impl Kind {
    /// nginx's `auth_request` keeps only the status of a denial (and the headers its config
    /// copies); Envoy returns portcullis's JSON body.
    fn json_denials(self) -> bool {
        self != Kind::Nginx
    }
}

/// The nginx binary: `PORTCULLIS_NGINX`, else `nginx` on PATH or in /usr/sbin (`make test`
/// installs Debian's package when it is missing).
pub fn nginx_bin() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_NGINX") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin"])
    {
        let candidate = Path::new(dir).join("nginx");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("nginx is not installed: run `make test`, which installs it");
}

/// A free loopback port (nginx cannot report a port it chose itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Real nginx running `examples/nginx.conf` with only its ports replaced.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    /// The h2c (prior knowledge) listener.
    pub h2_port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(authz: SocketAddr, upstream: SocketAddr) -> Self {
        let shipped = std::fs::read_to_string(root().join("examples/nginx.conf"))
            .expect("examples/nginx.conf");
        let port = free_port();
        let h2_port = free_port();
        let mut config = shipped;
        for (from, to) in [
            ("127.0.0.1:10000", port),
            ("127.0.0.1:10001", h2_port),
            ("127.0.0.1:9004", authz.port()),
            ("127.0.0.1:8080", upstream.port()),
            ("127.0.0.1:9003", free_port()),
        ] {
            assert!(config.contains(from), "examples/nginx.conf: no {from}");
            config = config.replace(from, &format!("127.0.0.1:{to}"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("logs dir");
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config).expect("write nginx.conf");
        let mut cmd = Command::new(nginx_bin());
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {}; error_log stderr warn;",
                dir.path().join("nginx.pid").display()
            ));
        let proc = Proc::spawn_command(cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nginx never listened:\n{}",
                proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Nginx {
            proc,
            port,
            h2_port,
            _dir: dir,
        }
    }
}

/// The HTTP ext_authz address a portcullis started with `http_authz_listen` logged.
pub fn http_authz_addr(portcullis: &Portcullis) -> SocketAddr {
    let line = portcullis.proc.wait_for_log("serving HTTP ext_authz");
    addr_in(&line, "http_authz_addr=")
}

/// The admin address a portcullis logged.
pub fn admin_addr(portcullis: &Portcullis) -> SocketAddr {
    let line = portcullis.proc.wait_for_log("serving admin endpoint");
    addr_in(&line, "admin_addr=")
}

fn addr_in(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// One proxy in front of portcullis.
pub struct Front {
    pub kind: Kind,
    pub port: u16,
    /// Where the front speaks HTTP/2 (h2c with prior knowledge).
    pub h2_port: u16,
    /// The sidecar's config: `jwt mint` and the other commands run with it.
    pub config: PathBuf,
    _envoy: Option<Envoy>,
    _nginx: Option<Nginx>,
}

/// The three fronts over one database and one signing key, so a token minted once is good on
/// each: the sidecar answers Envoy over gRPC and, untrusted, over HTTP (`http_service`); a
/// second portcullis on the same database answers nginx with `http_authz_trust_forwarded`.
pub struct Fronts {
    pub sidecar: Portcullis,
    pub forwarded: Portcullis,
    /// Envoy gRPC (the reference), Envoy HTTP, nginx: in [`Kind`] order.
    pub all: Vec<Front>,
}

impl Fronts {
    /// Starts the fronts for `config` (written, migrated and with its policy; it must have
    /// the `shutdown_grace: 5s` line the harness writes), each proxy forwarding to `upstream`.
    pub async fn start(config: &Path, upstream: SocketAddr) -> Self {
        let text = std::fs::read_to_string(config).expect("config");
        let with = |extra: &str, file: &str| {
            let marker = "  shutdown_grace: 5s\n";
            assert!(text.contains(marker), "{}: no {marker:?}", config.display());
            let path = config.with_file_name(file);
            let changed = text.replacen(marker, &format!("{marker}{extra}"), 1);
            std::fs::write(&path, changed).expect("write config");
            path
        };
        let sidecar_config = with("  http_authz_listen: 127.0.0.1:0\n", "sidecar.yaml");
        let forwarded_config = with(
            "  http_authz_listen: 127.0.0.1:0\n  http_authz_trust_forwarded: true\n",
            "forwarded.yaml",
        );
        let sidecar = Portcullis::start(&sidecar_config).await;
        let forwarded = Portcullis::start(&forwarded_config).await;
        let grpc = Envoy::start(sidecar.addr, upstream).await;
        let http = Envoy::start_file(
            "envoy/envoy-http.yaml",
            &[
                (9004, http_authz_addr(&sidecar).port()),
                (9002, admin_addr(&sidecar).port()),
                (8080, upstream.port()),
                (9901, 0),
                (10000, 0),
            ],
        )
        .await;
        let nginx = Nginx::start(http_authz_addr(&forwarded), upstream).await;
        let front = |kind, port, h2_port, envoy, nginx| Front {
            kind,
            port,
            h2_port,
            config: sidecar_config.clone(),
            _envoy: envoy,
            _nginx: nginx,
        };
        let all = vec![
            front(Kind::EnvoyGrpc, grpc.port, grpc.port, Some(grpc), None),
            front(Kind::EnvoyHttp, http.port, http.port, Some(http), None),
            front(Kind::Nginx, nginx.port, nginx.h2_port, None, Some(nginx)),
        ];
        Fronts {
            sidecar,
            forwarded,
            all,
        }
    }
}

impl Front {
    pub fn token(&self, email: &str) -> String {
        cli_ok(&self.config, &["jwt", "mint", "--user", email])
            .trim()
            .to_owned()
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers).await
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{:?} {method} {path}: {e}", self.kind))
    }
}

/// A JWT's claims, read without verifying (the test minted it).
pub fn payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Allowed callers reach the upstream with exactly portcullis's identity headers.
pub async fn allows_and_identifies(front: &Front) {
    let ada = front.token("ada@example.com");
    let bearer = format!("Bearer {ada}");
    let r = front
        .get("/api/v1/roles", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(r.json()["path"], "/api/v1/roles");
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);
    assert_eq!(r.upstream_header("x-auth-name"), vec!["Ada Lovelace"]);
    assert_eq!(
        r.upstream_header("x-auth-user-id"),
        vec![payload(&ada)["sub"].as_str().unwrap().to_owned()]
    );
    assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["user"]);
    assert_eq!(r.upstream_header("x-auth-credential"), vec!["jwt"]);
    assert_eq!(r.upstream_header("x-auth-roles"), vec!["admin"]);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read,roles:write"]
    );
    assert_eq!(r.upstream_header("x-auth-decision-id").len(), 1);

    let cookie = format!("theme=dark; jwt-token={ada}");
    let r = front
        .get("/api/v1/roles/7/users", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);

    // Host-scoped activity: PUT is granted on allocations.example.com only.
    let r = front
        .send("PUT", "/api/v1/roles/7", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 403, "{:?}: {}", front.kind, r.body);

    let r = front.get("/healthz", &[]).await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["anonymous"]);
    assert!(r.upstream_header("x-auth-user-id").is_empty());
}

/// 401 for unknown callers (with the challenge), 403 for unpermitted ones, ambiguity refused.
pub async fn denies(front: &Front) {
    let r = front.get("/api/v1/roles", &[]).await;
    assert_eq!(r.status, 401, "{:?}: {}", front.kind, r.body);
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        challenges,
        [r#"Bearer realm="portcullis""#],
        "{:?}",
        front.kind
    );
    assert!(r
        .header("x-auth-decision-id")
        .is_some_and(|id| !id.is_empty()));
    if front.kind.json_denials() {
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["error"], "unauthenticated");
        assert_eq!(body["reason"], "missing_credential");
        assert_eq!(body["decision_id"].as_str(), r.header("x-auth-decision-id"));
    }

    let r = front
        .get("/api/v1/roles", &[("authorization", "Bearer not.a.jwt")])
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.contains(r#"error="invalid_token""#)),
        "{r:?}"
    );

    let grace = format!("Bearer {}", front.token("grace@example.com"));
    let ada = format!("Bearer {}", front.token("ada@example.com"));
    assert_eq!(
        front
            .get("/api/v1/roles", &[("authorization", &grace)])
            .await
            .status,
        200
    );
    let r = front
        .send("POST", "/api/v1/roles", &[("authorization", &grace)])
        .await;
    assert_eq!(r.status, 403, "{:?}: {}", front.kind, r.body);
    if front.kind.json_denials() {
        assert_eq!(r.json()["error"], "forbidden");
        assert_eq!(r.json()["reason"], "no_matching_activity");
    }

    // Ambiguous credentials are refused, never guessed.
    let r = front
        .get(
            "/api/v1/roles",
            &[("authorization", &grace), ("authorization", &ada)],
        )
        .await;
    // nginx refuses a repeated Authorization header itself, before asking portcullis.
    let refused = if front.kind == Kind::Nginx { 400 } else { 401 };
    assert_eq!(
        r.status, refused,
        "{:?} two Authorization headers",
        front.kind
    );
    let grace_token = grace.trim_start_matches("Bearer ");
    let two_cookies = format!("jwt-token={grace_token}; jwt-token=x.y.z");
    assert_eq!(
        front
            .get("/api/v1/roles", &[("cookie", &two_cookies)])
            .await
            .status,
        401
    );
}

/// A client's x-auth-* headers never reach the upstream as the client sent them, except
/// where `open_names` says this proxy cannot remove them (nginx: names portcullis never sets).
pub async fn strips_spoofed_identity_headers(front: &Front) {
    let token = front.token("grace@example.com");
    let grace = format!("Bearer {token}");
    let r = front
        .get(
            "/api/v1/roles",
            &[
                ("authorization", &grace),
                ("x-auth-permissions", "admin"),
                ("x-auth-roles", "admin"),
                ("x-auth-user-id", "1"),
                ("x-auth-email", "root@example.com"),
                ("x-auth-token-id", "forged"),
                ("x-auth-decision-id", "forged"),
                ("x-auth-anything", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read"]
    );
    assert_eq!(r.upstream_header("x-auth-roles"), vec!["viewer"]);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["grace@example.com"]);
    let claims = payload(&token);
    assert_eq!(
        r.upstream_header("x-auth-user-id"),
        vec![claims["sub"].as_str().unwrap().to_owned()]
    );
    assert_eq!(
        r.upstream_header("x-auth-token-id"),
        vec![claims["jti"].as_str().unwrap().to_owned()]
    );
    let decision = r.upstream_header("x-auth-decision-id");
    assert_eq!(decision.len(), 1);
    assert_ne!(decision[0], "forged");
    // The one spoofing the HTTP mode behind nginx is open to: a name portcullis never sets.
    let unknown = if front.kind == Kind::Nginx {
        vec!["forged".to_owned()]
    } else {
        Vec::new()
    };
    assert_eq!(r.upstream_header("x-auth-anything"), unknown);

    // Anonymous on a public route: every identity header the client sent is gone.
    let r = front
        .get(
            "/healthz",
            &[
                ("x-auth-user-id", "1"),
                ("x-auth-permissions", "admin"),
                ("X-Auth-Email", "a@b"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(r.upstream_header("x-auth-user-id"), Vec::<String>::new());
    assert_eq!(r.upstream_header("x-auth-email"), Vec::<String>::new());
    assert_eq!(r.upstream_header("x-auth-permissions"), vec!["public"]);

    // Underscore variants never become identity headers.
    let r = front.get("/healthz", &[("x_auth_user_id", "1")]).await;
    assert!(
        r.status == 400 || r.upstream_header("x_auth_user_id").is_empty(),
        "{:?}: {r:?}",
        front.kind
    );
    if r.status == 200 {
        assert_eq!(r.upstream_header("x-auth-user-id"), Vec::<String>::new());
    }

    // A client's X-Forwarded-* never choose what is decided.
    let r = front
        .get(
            "/api/v1/admin",
            &[
                ("x-forwarded-uri", "/healthz"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "app.example.com"),
            ],
        )
        .await;
    assert_eq!(r.status, 401, "{:?}: {}", front.kind, r.body);
    // nginx, which is told to believe them, never passes a client's copies on.
    if front.kind == Kind::Nginx {
        let r = front
            .get("/healthz", &[("x-forwarded-uri", "/api/v1/admin")])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.upstream_header("x-forwarded-uri"), Vec::<String>::new());
    }
}

/// Queries do not change the decision; path tricks never reach the upstream with a 200.
pub async fn denies_path_tricks(front: &Front) {
    let grace = format!("Bearer {}", front.token("grace@example.com"));
    let auth = [("authorization", grace.as_str())];
    let r = front.get("/api/v1/roles?filter=/admin&x=1", &auth).await;
    assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    assert_eq!(r.json()["path"], "/api/v1/roles?filter=/admin&x=1");
    assert_eq!(front.get("/healthz?/api/v1/roles", &[]).await.status, 200);
    assert_eq!(front.get("/api/v1/admin?/healthz", &[]).await.status, 401);
    assert_eq!(
        front.get("/api/v1/admin?/api/v1/roles", &auth).await.status,
        403
    );
    let attacks = [
        "/api/v1/roles/../admin",
        "/api/v1/roles/./../../admin",
        "//admin",
        "//api/v1/admin",
        "/api/v1/roles/%2e%2e/admin",
        "/api/v1/roles/.%2E/admin",
        "/api/v1/roles%2Fadmin",
        "/api/v1/roles%2fadmin",
        "/api/v1/roles/x%2F..%2F..%2Fadmin",
        "/api/v1/roles/%5C..%5Cadmin",
        "/api/v1/roles/..;x=y/admin",
        "/api/v1/roles/x;/users",
        "/api/v1/roles/%00/users",
        "/api/v1/roles/%252F/users",
        "/healthz/../api/v1/admin",
        "/healthz/..%2Fapi%2Fv1%2Fadmin",
        "/api/v1/Roles",
        "/api/v1/roles/",
    ];
    for path in attacks {
        let r = front.get(path, &auth).await;
        assert_ne!(
            r.status, 200,
            "{:?} {path} was allowed: {}",
            front.kind, r.body
        );
        assert!(
            [400, 401, 403, 404].contains(&r.status),
            "{:?} {path}: unexpected {}",
            front.kind,
            r.status
        );
    }
    // Envoy normalizes dot segments first and the upstream sees the normalized path; nginx
    // forwards the raw target, so portcullis decides (and refuses) the raw one.
    let r = front.get("/api/v1/x/../roles", &auth).await;
    if front.kind == Kind::Nginx {
        assert_eq!(r.status, 403, "{}", r.body);
    } else {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["path"], "/api/v1/roles");
    }
}

/// With portcullis gone, every front refuses every request (Envoy: 503; nginx: 500).
pub async fn fails_closed(fronts: &mut Fronts) {
    let ada = format!("Bearer {}", fronts.all[0].token("ada@example.com"));
    for front in &fronts.all {
        let r = front.get("/api/v1/roles", &[("authorization", &ada)]).await;
        assert_eq!(r.status, 200, "{:?}: {}", front.kind, r.body);
    }
    fronts.sidecar.proc.kill();
    fronts.forwarded.proc.kill();
    for front in &fronts.all {
        let refused: &[u16] = match front.kind {
            Kind::Nginx => &[500],
            Kind::EnvoyGrpc | Kind::EnvoyHttp => &[503, 403],
        };
        for path in ["/api/v1/roles", "/healthz"] {
            for _ in 0..5 {
                let r = front.get(path, &[("authorization", &ada)]).await;
                assert!(
                    refused.contains(&r.status),
                    "{:?} {path}: {} {}",
                    front.kind,
                    r.status,
                    r.body
                );
            }
        }
    }
}
