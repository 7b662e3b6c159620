//! The single sign-on stack of the browser test and `make demo-sso`: a test CA and a
//! certificate for the `*.portcullis.test` hosts (made here, never committed), the real
//! `oidc-provider`, portcullis with its login issuer, two app hosts and an `evil.test` page
//! behind the shipped TLS Envoy (`envoy/envoy-tls.yaml`), and Chromium's command line.

use std::net::SocketAddr;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::oidc::{accounts, clients, free_port, LoginServer, OidcProvider};
use super::Envoy;

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub const POLICY: &str =
    "permissions:\n  pages: {activities: [GET /]}\n  notes: {activities: [POST /notes]}\n\
roles:\n  viewer: [pages, notes]\n";

/// A test CA and a certificate it signs for the four hosts; written to `dir`. Returns the
/// base64 SHA-256 of the leaf's public key, which Chromium is told to trust.
pub fn certificates(dir: &Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose, PublicKeyData,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "portcullis test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let hosts = [
        "app1.portcullis.test",
        "app2.portcullis.test",
        "login.portcullis.test",
        "evil.portcullis.test",
    ];
    let mut leaf = CertificateParams::new(hosts.map(str::to_owned).to_vec()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "app1.portcullis.test");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("tls.crt"), format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    STANDARD.encode(Sha256::digest(key.subject_public_key_info()))
}

/// The app behind Envoy: a page rendered from the identity headers, a form that saves a
/// note, a sign-out form; for `evil.portcullis.test` (a sibling host not on the allow-list),
/// a form that posts to app1.
pub async fn start_app(name: &'static str, origin1: String, own_origin: String) -> SocketAddr {
    use axum::http::HeaderMap;
    use axum::response::Html;
    let index = move |headers: HeaderMap| {
        let origin1 = origin1.clone();
        let own_origin = own_origin.clone();
        async move {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            if h("host").starts_with("evil.") {
                return Html(format!(
                    "<h1>evil sibling</h1><form id=\"attack\" method=\"post\" \
                     action=\"{origin1}/notes\"><input name=\"text\" value=\"pwned\"></form>"
                ));
            }
            Html(format!(
                "<h1 id=\"who\">{name}: signed in as {}</h1><p>roles: {}</p>\
                 <form id=\"note\" method=\"post\" action=\"/notes\">\
                 <input name=\"text\" value=\"hello\"><button>Save</button></form>\
                 <form id=\"logout\" method=\"post\" action=\"/auth/logout\">\
                 <input type=\"hidden\" name=\"redirect_url\" value=\"{own_origin}/\">\
                 <button>Sign out</button></form>",
                h("x-auth-email"),
                h("x-auth-roles"),
            ))
        }
    };
    let app = axum::Router::new()
        .route("/", axum::routing::get(index))
        .route(
            "/notes",
            axum::routing::post(move || async move {
                Html(format!("<p id=\"saved\">{name}: saved</p>"))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `evil.test`: another site, with a form that posts to app1.
pub async fn start_evil(origin1: String) -> SocketAddr {
    let page = format!(
        "<h1>evil.test</h1><form id=\"attack\" method=\"post\" action=\"{origin1}/notes\">\
         <input name=\"text\" value=\"pwned\"></form>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(page) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub fn config_yaml(
    dir: &Path,
    http_port: u16,
    envoy_port: u16,
    issuer: &str,
    lifetime_s: i64,
    renew_before_s: i64,
) -> String {
    let key = |n: &str| super::root().join("tests/data/keys").join(n);
    // Envoy's TLS listener is not on 443: every allow-list entry names its port
    // (`host:port`, that port only), and the apps are listed one by one.
    let host = |h: &str| format!("'{h}.portcullis.test:{envoy_port}'");
    let origin = |h: &str| format!("'https://{h}.portcullis.test:{envoy_port}'");
    format!(
        r#"server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  http_listen: 127.0.0.1:{http_port}
database:
  url: sqlite://{dir}/portcullis.db
  reload_interval: 100ms
login:
  public_url: https://login.portcullis.test:{envoy_port}
  provider:
    issuer: {issuer}
    client_id: web
    client_secret_file: {dir}/client-secret
  default_roles: [viewer]
  token: {{issuer: 'https://login.portcullis.test', audience: apps, lifetime: {lifetime_s}s}}
  renew_before: {renew_before_s}s
  signing_keys:
    - {{public_key_file: {pub1}, private_key_file: {key1}}}
  cookie: {{domain: portcullis.test}}
  redirects:
    domains: [{app1_host}, {app2_host}, {login_host}]
    default: {app1}
  state_secret_file: {dir}/state-secret
"#,
        dir = dir.display(),
        pub1 = key("es256.pub.pem").display(),
        key1 = key("es256.key.pem").display(),
        app1 = origin("app1"),
        app1_host = host("app1"),
        app2_host = host("app2"),
        login_host = host("login"),
    )
}

/// The shipped TLS Envoy config with this test's ports and certificate.
pub fn envoy_yaml(
    envoy_port: u16,
    grpc: SocketAddr,
    http_port: u16,
    apps: [SocketAddr; 2],
    tls: &Path,
) -> String {
    let shipped = std::fs::read_to_string(super::root().join("envoy/envoy-tls.yaml")).unwrap();
    let replaced = shipped
        .replace("port_value: 9902", "port_value: 0")
        .replace("port_value: 10443", &format!("port_value: {envoy_port}"))
        .replace("port_value: 9001", &format!("port_value: {}", grpc.port()))
        .replace("port_value: 9003", &format!("port_value: {http_port}"))
        .replace(
            "port_value: 8081",
            &format!("port_value: {}", apps[0].port()),
        )
        .replace(
            "port_value: 8082",
            &format!("port_value: {}", apps[1].port()),
        )
        .replace("/etc/portcullis/tls", &tls.display().to_string());
    for original in ["9902", "10443", "9001", "9003", "8081", "8082"] {
        assert!(
            !replaced.contains(&format!("port_value: {original}}}")),
            "port {original} not replaced"
        );
    }
    replaced
}

/// The hosts Chromium resolves to loopback.
pub const HOSTS: [&str; 5] = [
    "app1.portcullis.test",
    "app2.portcullis.test",
    "login.portcullis.test",
    "evil.portcullis.test",
    "evil.test",
];

/// Chromium's flags for the stack: the test hosts on loopback, the leaf's key trusted.
pub fn chromium_args(spki: &str) -> Vec<String> {
    let rules: Vec<String> = HOSTS.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
    vec![
        format!("host-resolver-rules={}", rules.join(", ")),
        format!("ignore-certificate-errors-spki-list={spki}"),
    ]
}

/// Everything running: keep it alive while the browser works.
pub struct SsoStack {
    pub provider: OidcProvider,
    pub server: LoginServer,
    pub envoy: Envoy,
    pub dir: tempfile::TempDir,
    pub envoy_port: u16,
    pub evil: SocketAddr,
    /// base64 SHA-256 of the certificate's public key, for Chromium.
    pub spki: String,
}

impl SsoStack {
    /// Starts it all, with minted tokens living `lifetime_s` and renewed `renew_before_s`
    /// before they expire.
    pub async fn start(lifetime_s: i64, renew_before_s: i64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("client-secret"),
            "web-client-secret-0123456789\n",
        )
        .expect("secret");
        std::fs::write(
            dir.path().join("state-secret"),
            "state-secret-0123456789abcdef-0123456789abcdef\n",
        )
        .expect("secret");
        let spki = certificates(dir.path());
        let envoy_port = free_port();
        let http_port = free_port();
        let origin = |h: &str| format!("https://{h}.portcullis.test:{envoy_port}");
        let provider = OidcProvider::start();
        provider
            .configure(clients(&origin("login")), accounts())
            .await;
        let config_path = dir.path().join("portcullis.yaml");
        std::fs::write(
            &config_path,
            config_yaml(
                dir.path(),
                http_port,
                envoy_port,
                &provider.issuer,
                lifetime_s,
                renew_before_s,
            ),
        )
        .expect("config");
        let config = portcullis::config::Config::load(Some(&config_path), |_| None)
            .unwrap_or_else(|e| panic!("config: {}", portcullis::error_chain(&e)));
        let store = portcullis::app::open_store(&config).await.expect("store");
        store.migrate().await.expect("migrate");
        let doc = portcullis::policy::PolicyDocument::from_yaml("sso", POLICY).expect("policy");
        portcullis::manage::apply(&store, &doc, false, false)
            .await
            .expect("apply");
        store.close().await;
        let server = LoginServer::start(&config).await;
        let app1 = origin("app1");
        let apps = [
            start_app("app1", app1.clone(), app1.clone()).await,
            start_app("app2", app1.clone(), origin("app2")).await,
        ];
        let evil = start_evil(app1).await;
        let envoy = Envoy::start_yaml(&envoy_yaml(
            envoy_port,
            server.grpc,
            http_port,
            apps,
            dir.path(),
        ))
        .await;
        SsoStack {
            provider,
            server,
            envoy,
            dir,
            envoy_port,
            evil,
            spki,
        }
    }

    /// `https://{host}.portcullis.test:{port}`.
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}.portcullis.test:{}", self.envoy_port)
    }
}
