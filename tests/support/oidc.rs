//! The login tests' OpenID provider and browser. The provider is npm's `oidc-provider`
//! (tests/oidc, installed by `make oidc-provider` with `npm ci`) run by Node on a loopback port;
//! the browser is reqwest with a cookie jar that follows redirects on loopback only and fills
//! in the provider's own login and consent forms.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Value};

use portcullis::app::Server;
use portcullis::config::Config;

/// The provider process; killed on drop.
pub struct OidcProvider {
    child: Child,
    pub issuer: String,
    http: reqwest::Client,
}

impl OidcProvider {
    pub fn start() -> Self {
        Self::start_at(0)
    }

    /// The provider on `port` (0: any free port), e.g. again where a killed one was.
    pub fn start_at(port: u16) -> Self {
        let dir = super::root().join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the login tests need the OpenID provider: run `make oidc-provider` (npm ci in tests/oidc)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .arg(port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (make test installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        reader
            .read_line(&mut line)
            .expect("provider prints its issuer");
        // Drained, so the provider never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let issuer = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("provider did not start: {line:?}"));
        OidcProvider {
            child,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("provider answers")
            .json()
            .await
            .expect("json")
    }

    /// Registers the clients (redirect URIs name portcullis's port) and the accounts.
    pub async fn configure(&self, clients: Value, accounts: Value) {
        self.post(
            "/__test/configure",
            json!({"clients": clients, "accounts": accounts}),
        )
        .await;
    }

    /// The same, without RP-initiated logout: no `end_session_endpoint`, as Google.
    pub async fn configure_without_logout(&self, clients: Value, accounts: Value) {
        self.post(
            "/__test/configure",
            json!({"clients": clients, "accounts": accounts, "logout": false}),
        )
        .await;
    }

    /// A new signing key from now on; returns its kid.
    pub async fn rotate(&self) -> String {
        self.post("/__test/rotate", json!({})).await["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    }

    /// A JWS with these claims signed by the provider's current key (and header overrides).
    pub async fn sign(&self, claims: Value, header: Value) -> String {
        self.post("/__test/sign", json!({"claims": claims, "header": header}))
            .await["token"]
            .as_str()
            .expect("token")
            .to_owned()
    }

    /// Stops the provider (it can no longer be reached).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How many requests the provider served on `path`.
    pub async fn hits(&self, path: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{}/__test/hits", self.issuer))
            .send()
            .await
            .expect("hits")
            .json()
            .await
            .expect("json");
        v[path].as_u64().unwrap_or(0)
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser: a cookie jar, redirects followed by hand on loopback only.
pub struct Browser {
    pub client: reqwest::Client,
}

pub struct Page {
    pub status: u16,
    pub url: reqwest::Url,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Browser {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let url = response.url().clone();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| {
                url.join(l)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| l.to_owned())
            });
        let set_cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            url,
            location,
            set_cookies,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::page(self.client.get(url).send().await.expect("GET")).await
    }

    /// Follows redirects while they stay on loopback and `stop` does not match the target.
    pub async fn follow(&self, url: &str, stop: impl Fn(&str) -> bool) -> Page {
        let mut page = self.get(url).await;
        for _ in 0..20 {
            match &page.location {
                Some(next)
                    if (300..400).contains(&page.status)
                        && next.starts_with("http://127.0.0.1")
                        && !stop(next) =>
                {
                    let next = next.clone();
                    page = self.get(&next).await;
                }
                _ => return page,
            }
        }
        panic!("too many redirects");
    }

    /// Starts a login at portcullis and signs in at the provider as `account`, stopping at
    /// the redirect back to portcullis's callback: returns the callback URL, not visited.
    pub async fn sign_in_until_callback(&self, login_url: &str, account: &str) -> String {
        self.sign_in_until(login_url, account, "/auth/callback")
            .await
    }

    /// Follows `url` and signs in at the provider as `account` (its login and consent
    /// forms), stopping at the first redirect whose target contains `stop`: returns it.
    pub async fn sign_in_until(&self, url: &str, account: &str, stop: &str) -> String {
        let login_url = url;
        let is_callback = |u: &str| u.contains(stop);
        let mut page = self.follow(login_url, is_callback).await;
        let form = Regex::new(r#"<form[^>]*action="([^"]+)""#).expect("re");
        let hidden =
            Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#).expect("re");
        for _ in 0..4 {
            if page.location.as_deref().is_some_and(is_callback) {
                return page.location.expect("location");
            }
            let Some(action) = form.captures(&page.body).map(|c| c[1].to_owned()) else {
                panic!(
                    "expected a provider form at {}: {} {}",
                    page.url, page.status, page.body
                );
            };
            let action = page.url.join(&action).expect("form action");
            let mut fields: Vec<(String, String)> = hidden
                .captures_iter(&page.body)
                .map(|c| (c[1].to_owned(), c[2].to_owned()))
                .collect();
            if page.body.contains("name=\"login\"") {
                fields.push(("login".to_owned(), account.to_owned()));
                fields.push(("password".to_owned(), "any".to_owned()));
            }
            let posted = Self::page(
                self.client
                    .post(action)
                    .form(&fields)
                    .send()
                    .await
                    .expect("POST form"),
            )
            .await;
            page = match &posted.location {
                Some(next) if is_callback(next) => return next.clone(),
                Some(next) => self.follow(&next.clone(), is_callback).await,
                None => posted,
            };
        }
        panic!("sign-in at the provider did not finish: {}", page.body);
    }
}

/// The value of a cookie in a list of `Set-Cookie` headers.
pub fn cookie_value<'a>(set_cookies: &'a [String], name: &str) -> Option<&'a str> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (n, v) = first.split_once('=')?;
        (n.trim() == name).then_some(v.trim())
    })
}

/// One query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A URL with one query parameter replaced.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            if k == name {
                (k.into_owned(), value.to_owned())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// A portcullis serving in this process, with login configured against `provider`.
pub struct LoginServer {
    pub http: String,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LoginServer {
    pub async fn start(config: &Config) -> Self {
        let started = Self::start_unready(config).await;
        started.wait_ready().await;
        started
    }

    /// Serving, without waiting for readiness.
    pub async fn start_unready(config: &Config) -> Self {
        let server = Server::bind(config).await.expect("binds");
        let http = format!("http://{}", server.http_addr().expect("http listener"));
        let grpc = server.local_addr().expect("grpc");
        let admin = server.admin_addr().expect("admin");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        LoginServer {
            http,
            grpc,
            admin,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Polls `/ready` (policy loaded and provider keys fetched).
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if let Ok(r) = client
                .get(format!("http://{}/ready", self.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("portcullis never became ready");
    }

    /// The admin `/status` document.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/status", self.admin))
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The pieces a login config is made of.
pub struct LoginSetup {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    /// `login.provider.jwks_cooldown`.
    pub cooldown: &'static str,
}

pub const POLICY: &str =
    "permissions:\n  read:\n    activities: [GET /r]\n  write:\n    activities: [POST /r]\n\
roles:\n  viewer: [read]\n  admin: [read, write]\n\
users:\n  - {email: disabled@example.com, roles: [viewer], disabled: true}\n";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

impl LoginSetup {
    pub fn new() -> Self {
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
        LoginSetup {
            dir,
            http_port: free_port(),
            cooldown: "1s",
        }
    }

    pub fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn key(name: &str) -> PathBuf {
        super::root().join("tests/data/keys").join(name)
    }

    /// The config YAML for `database_url` and `provider`, with `extra_login` lines appended
    /// inside the `login` section (two-space indented YAML; unindented lines start top-level
    /// sections). `{issuer}` in them is the provider's issuer.
    pub fn config(&self, database_url: &str, issuer: &str, extra_login: &str) -> Config {
        let dir = self.dir.path();
        let yaml = format!(
            r#"server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  http_listen: 127.0.0.1:{port}
database:
  url: {db}
  reload_interval: 100ms
login:
  public_url: {public}
  provider:
    issuer: {issuer}
    client_id: web
    other_client_ids: [android]
    client_secret_file: {dir}/client-secret
    tokeninfo_url: {issuer}/tokeninfo
    jwks_cooldown: {cooldown}
  default_roles: [viewer]
  token: {{issuer: 'https://auth.example.com', audience: apps, lifetime: 10m}}
  signing_keys:
    - {{public_key_file: {pub1}, private_key_file: {key1}}}
  cookie: {{domain: example.com, secure: false}}
  redirects:
    origins: ['https://app.example.com', 'https://partner.example.net']
    default: 'https://app.example.com/'
  state_secret_file: {dir}/state-secret
{extra_login}"#,
            port = self.http_port,
            cooldown = self.cooldown,
            db = database_url,
            public = self.public_url(),
            dir = dir.display(),
            pub1 = Self::key("es256.pub.pem").display(),
            key1 = Self::key("es256.key.pem").display(),
        );
        let yaml = yaml.replace("{issuer}", issuer);
        let path = dir.join("portcullis.yaml");
        std::fs::write(&path, &yaml).expect("config");
        Config::load(Some(&path), |_| None)
            .unwrap_or_else(|e| panic!("config: {}\n{yaml}", portcullis::error_chain(&e)))
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}/portcullis.db", self.dir.path().display())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for LoginSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// The provider's clients: the web client (confidential, redirecting to portcullis) and an
/// Android client (public, redirecting to an app URL), plus another app's client.
pub fn clients(public_url: &str) -> Value {
    json!([
        {"client_id": "web", "client_secret": "web-client-secret-0123456789",
         "redirect_uris": [format!("{public_url}/auth/callback")],
         "post_logout_redirect_uris": [format!("{public_url}/auth/logout/done")],
         "grant_types": ["authorization_code"], "response_types": ["code"]},
        {"client_id": "android", "token_endpoint_auth_method": "none",
         "redirect_uris": ["http://127.0.0.1/android-callback"],
         "grant_types": ["authorization_code"], "response_types": ["code"]},
        {"client_id": "other-app", "token_endpoint_auth_method": "none",
         "redirect_uris": ["http://127.0.0.1/other-callback"],
         "grant_types": ["authorization_code"], "response_types": ["code"]}
    ])
}

/// Google-shaped test accounts (login name -> claims).
pub fn accounts() -> Value {
    json!({
        "ada": {"email": "ada@example.com", "email_verified": true, "hd": "example.com", "name": "Ada Lovelace"},
        "grace": {"email": "grace@example.com", "email_verified": true, "hd": "example.com", "name": "Grace Hopper"},
        "unverified": {"email": "eve@example.com", "email_verified": false, "hd": "example.com"},
        "outsider": {"email": "mallory@other.com", "email_verified": true, "hd": "other.com"},
        "disabled": {"email": "disabled@example.com", "email_verified": true, "hd": "example.com"}
    })
}

/// Applies the test policy to the configured store.
pub async fn apply_policy(config: &Config) {
    let store = portcullis::app::open_store(config).await.expect("store");
    store.migrate().await.expect("migrate");
    let doc = portcullis::policy::PolicyDocument::from_yaml("test", POLICY).expect("policy");
    portcullis::manage::apply(&store, &doc, false, false)
        .await
        .expect("apply");
    store.close().await;
}

/// Everything a login test needs: provider, config, server.
pub struct LoginStack {
    pub provider: OidcProvider,
    pub setup: LoginSetup,
    pub config: Config,
    pub server: LoginServer,
}

impl LoginStack {
    pub async fn start(extra_login: &str) -> Self {
        let setup = LoginSetup::new();
        let db = setup.sqlite_url();
        Self::start_on(setup, &db, extra_login).await
    }

    pub async fn start_on(setup: LoginSetup, database_url: &str, extra_login: &str) -> Self {
        Self::start_with(setup, database_url, extra_login, true).await
    }

    /// With a provider that has no `end_session_endpoint` (as Google).
    pub async fn start_without_provider_logout(extra_login: &str) -> Self {
        let setup = LoginSetup::new();
        let db = setup.sqlite_url();
        Self::start_with(setup, &db, extra_login, false).await
    }

    async fn start_with(
        setup: LoginSetup,
        database_url: &str,
        extra_login: &str,
        provider_logout: bool,
    ) -> Self {
        let provider = OidcProvider::start();
        if provider_logout {
            provider
                .configure(clients(&setup.public_url()), accounts())
                .await;
        } else {
            provider
                .configure_without_logout(clients(&setup.public_url()), accounts())
                .await;
        }
        let config = setup.config(database_url, &provider.issuer, extra_login);
        apply_policy(&config).await;
        let server = LoginServer::start(&config).await;
        LoginStack {
            provider,
            setup,
            config,
            server,
        }
    }

    pub fn login_url(&self, target: &str) -> String {
        let mut u = reqwest::Url::parse(&format!("{}/auth/login", self.server.http)).expect("url");
        u.query_pairs_mut().append_pair("redirect_url", target);
        u.to_string()
    }
}
