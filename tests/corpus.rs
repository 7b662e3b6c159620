//! The bypass corpus (`tests/corpus/*.yaml`, one case per entry): every request an attacker
//! might try, sent through real Envoy running the shipped `envoy/envoy.yaml` to portcullis and
//! a recording upstream, then (where Envoy lets it through) straight to portcullis over gRPC.
//!
//! Through Envoy each case checks the status and reason code, whether Envoy or portcullis
//! decided (a tap between them records every `Check`), and the differential property users
//! depend on: whenever the upstream received a request, its method, request target and `Host`
//! are exactly those portcullis was asked about and allowed, and its `x-auth-*` headers are
//! exactly the ones portcullis set, each once, whatever the client sent.
//!
//! The format is described in `tests/corpus/README.md`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "support/recording.rs"]
mod recording;
mod support;
#[path = "support/wire.rs"]
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
use portcullis::grpc::CheckService;
use serde::Deserialize;
use serde_json::Value;

use recording::{AuthzTap, RecordingUpstream, TapMode};
use wire::WireResponse;

/// The corpus must not shrink below the size the issue asked for.
const MIN_CASES: usize = 300;
const DEFAULT_HOST: &str = "app.example.com";
const ISSUER: &str = "portcullis-test";
const AUDIENCE: &str = "portcullis";
/// A secret that is not the configured one, for forged HMAC signatures.
const WRONG_SECRET: &str = "not-the-configured-secret-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// The case format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    /// A CVE/GHSA id, or the rule in SECURITY.md the case tests.
    source: String,
    #[serde(default)]
    note: Option<String>,
    /// `"1.1"` (raw socket, default) or `"2"` (h2c).
    #[serde(default = "default_http")]
    http: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    host: Option<String>,
    /// Send no `Host` header at all (HTTP/1.1 only).
    #[serde(default)]
    no_host: bool,
    /// `HTTP/1.1` unless given (`HTTP/1.0`, `HTTP/0.9`, garbage).
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    credential: Option<CredentialSpec>,
    #[serde(default)]
    body: Option<String>,
    /// The whole HTTP/1.1 request, sent as written (placeholders expanded).
    #[serde(default)]
    raw: Option<String>,
    /// Map each character U+0000..=U+00FF of the request to one byte (for non-UTF-8 bytes).
    #[serde(default)]
    latin1: bool,
    /// Through Envoy and gRPC (default), or gRPC only (`grpc`) for what no client can send.
    #[serde(default)]
    transport: Transport,
    #[serde(default)]
    expect: Option<Expect>,
    /// What portcullis alone answers when handed this request as written. Defaults to
    /// `expect` for cases portcullis decides; `skip` for what means nothing without Envoy.
    #[serde(default)]
    grpc: Option<GrpcExpect>,
    /// For `transport: grpc`: the CheckRequest, field by field.
    #[serde(default)]
    grpc_request: Option<GrpcRequest>,
    /// Which in-process service answers over gRPC: `serving` (default), `no_policy` (no
    /// snapshot loaded yet) or `store_down` (the database is gone once the snapshot loaded).
    #[serde(default)]
    grpc_service: GrpcService,
    /// What the tap between Envoy and portcullis does: `forward` (default), or fails as a
    /// broken portcullis would (`error`, `unavailable`, `hang`).
    #[serde(default)]
    tap: TapMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GrpcService {
    #[default]
    Serving,
    NoPolicy,
    StoreDown,
}

fn default_http() -> String {
    "1.1".to_owned()
}

fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Transport {
    #[default]
    Envoy,
    Grpc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialSpec {
    /// A user of `examples/policy.yaml` (ada, grace, alan): a token from `portcullis jwt mint`.
    #[serde(default)]
    user: Option<String>,
    /// An API token: `bot` (reporting-bot), `ada`, `ada_read` (ada limited to roles:read).
    #[serde(default)]
    api_token: Option<String>,
    /// A token built for this case.
    #[serde(default)]
    jwt: Option<JwtSpec>,
    /// Where it goes: `bearer` (default), `cookie`, `x-api-token`, or `none` (only `${jwt}`).
    #[serde(default, rename = "in")]
    place: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtSpec {
    /// Merged over `{"alg": "HS256", "typ": "JWT", "kid": "test-hs256"}`; `null` removes a field.
    #[serde(default)]
    header: Option<serde_json::Map<String, Value>>,
    /// The header JSON exactly as written (duplicate keys, odd spacing).
    #[serde(default)]
    header_raw: Option<String>,
    /// Merged over valid admin claims; `null` removes a claim. `"$now+300"` is a number.
    #[serde(default)]
    claims: Option<serde_json::Map<String, Value>>,
    /// The payload exactly as written.
    #[serde(default)]
    claims_raw: Option<String>,
    /// hs256 (default) | hs384 | hs512 | rs256 | es256 | eddsa | wrong-secret |
    /// rs-public-key-as-hmac | empty | ecdsa-zero
    #[serde(default)]
    sign: Option<String>,
    /// The signature segment as written, instead of `sign`.
    #[serde(default)]
    signature: Option<String>,
    /// Changes after signing: flip-signature, pad-payload, extra-segment, drop-signature,
    /// standard-base64-payload.
    #[serde(default)]
    tamper: Vec<String>,
    /// A literal token; everything else is ignored.
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    /// `portcullis` (default): it was asked and decided; `envoy`: Envoy answered on its own.
    #[serde(default)]
    by: By,
    /// For an allow: the request target the upstream must receive.
    #[serde(default)]
    upstream_target: Option<String>,
    /// The request target portcullis must be asked about (after Envoy's normalization).
    #[serde(default)]
    authorized_path: Option<String>,
    /// For an allow: exact values of identity headers upstream.
    #[serde(default)]
    upstream: BTreeMap<String, Vec<String>>,
    /// Assert only the differential property, not a status (a known hole being fixed).
    #[serde(default)]
    differential_only: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum By {
    #[default]
    Portcullis,
    Envoy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum GrpcExpect {
    Skip(SkipWord),
    Decision {
        status: u16,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        upstream: BTreeMap<String, Vec<String>>,
    },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SkipWord {
    Skip,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcRequest {
    /// No `attributes.request.http` at all.
    #[serde(default)]
    no_http: bool,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    host: Option<String>,
    /// `header_map` entries (as with `encode_raw_headers`), values as text.
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// `header_map` entries whose raw value is given in hex (non-UTF-8 bytes).
    #[serde(default)]
    headers_hex: Vec<(String, String)>,
    /// The legacy `headers` map instead of `header_map`.
    #[serde(default)]
    legacy_headers: BTreeMap<String, String>,
}

/// What portcullis alone must answer: status, reason, identity headers.
type GrpcDecision = (u16, Option<String>, BTreeMap<String, Vec<String>>);

#[derive(Debug)]
struct Loaded {
    file: String,
    case: Case,
}

fn corpus_dir() -> PathBuf {
    support::root().join("tests/corpus")
}

fn load_corpus() -> Vec<Loaded> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read corpus file");
        let cases: Vec<Case> =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        all.extend(cases.into_iter().map(|case| Loaded {
            file: file.clone(),
            case,
        }));
    }
    all
}

impl Case {
    fn expect(&self) -> &Expect {
        self.expect
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no expect", self.id))
    }

    /// What portcullis alone must answer, or `None` when the case is not run over gRPC.
    fn grpc_expectation(&self) -> Option<GrpcDecision> {
        match &self.grpc {
            Some(GrpcExpect::Skip(_)) => None,
            Some(GrpcExpect::Decision {
                status,
                reason,
                upstream,
            }) => Some((*status, reason.clone(), upstream.clone())),
            None => {
                let e = self.expect.as_ref()?;
                if e.by == By::Envoy || e.differential_only || self.raw.is_some() {
                    return None;
                }
                Some((e.status?, e.reason.clone(), e.upstream.clone()))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The environment: config, database, credentials
// ---------------------------------------------------------------------------------------------

fn key_file(name: &str) -> PathBuf {
    support::root().join("tests/data/keys").join(name)
}

/// The corpus' portcullis config: the HS256 key `jwt mint` signs with, plus RS256 and ES256
/// public keys, so that algorithm confusion between configured keys can be tried.
fn write_corpus_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("jwt-secret"), support::SECRET).expect("secret");
    let config = format!(
        r#"server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  shutdown_grace: 5s
database:
  url: "sqlite://{db}"
  reload_interval: 200ms
jwt:
  issuer: {ISSUER}
  audience: [{AUDIENCE}]
  keys:
    - {{kid: test-hs256, algorithm: HS256, secret_file: "{secret}"}}
    - {{kid: test-rs256, algorithm: RS256, public_key_file: "{rs}"}}
    - {{kid: test-es256, algorithm: ES256, public_key_file: "{es}"}}
  signing_key: test-hs256
  permissions_from: token
api_tokens:
  last_used_flush: 200ms
log:
  level: info
"#,
        db = dir.join("portcullis.db").display(),
        secret = dir.join("jwt-secret").display(),
        rs = key_file("rs256.pub.pem").display(),
        es = key_file("es256.pub.pem").display(),
    );
    let path = dir.join("portcullis.yaml");
    std::fs::write(&path, config).expect("config");
    support::cli_ok(&path, &["migrate"]);
    let policy = support::root().join("examples/policy.yaml");
    support::cli_ok(&path, &["policy", "apply", policy.to_str().unwrap()]);
    path
}

/// Named credentials, made once per run.
struct Credentials {
    users: HashMap<String, String>,
    api: HashMap<String, String>,
}

/// Issues an API token; returns (id, token).
fn issue_api_token(config: &Path, args: &[&str]) -> (String, String) {
    let mut full = vec!["token", "issue"];
    full.extend_from_slice(args);
    let (code, out, err) = support::cli(config, &full);
    assert_eq!(code, 0, "token issue {args:?}: {out}{err}");
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no token id in {err:?}"))
        .to_owned();
    (id, out.trim().to_owned())
}

impl Credentials {
    fn make(config: &Path) -> Self {
        let mut users = HashMap::new();
        for user in ["ada", "grace", "alan"] {
            let email = format!("{user}@example.com");
            let token = support::cli_ok(config, &["jwt", "mint", "--user", &email]);
            users.insert(user.to_owned(), token.trim().to_owned());
        }
        // A token of grace's revoked by its jti.
        let revoked = support::cli_ok(config, &["jwt", "mint", "--user", "grace@example.com"]);
        let revoked = revoked.trim().to_owned();
        users.insert("grace_revoked".to_owned(), revoked);
        let mut creds = Credentials {
            users,
            api: HashMap::new(),
        };
        let jti = creds.claim("grace_revoked", "jti");
        support::cli_ok(config, &["jwt", "revoke", &jti]);

        let mut api = HashMap::new();
        let issue = |args: &[&str]| issue_api_token(config, args);
        api.insert(
            "bot".to_owned(),
            issue(&["--service-account", "reporting-bot"]).1,
        );
        api.insert("ada".to_owned(), issue(&["--user", "ada@example.com"]).1);
        api.insert(
            "ada_read".to_owned(),
            issue(&["--user", "ada@example.com", "--permissions", "roles:read"]).1,
        );
        let (id, token) = issue(&["--service-account", "reporting-bot"]);
        support::cli_ok(config, &["token", "revoke", &id]);
        api.insert("revoked".to_owned(), token);
        support::cli_ok(
            config,
            &[
                "service-account",
                "create",
                "corpus-bot",
                "--roles",
                "viewer",
            ],
        );
        let (_, token) = issue(&["--service-account", "corpus-bot"]);
        support::cli_ok(config, &["service-account", "disable", "corpus-bot"]);
        api.insert("disabled_owner".to_owned(), token);
        creds.api = api;
        creds
    }

    fn user(&self, name: &str) -> &str {
        self.users
            .get(name)
            .unwrap_or_else(|| panic!("no user {name:?} (ada, grace, alan, grace_revoked)"))
    }

    fn api(&self, name: &str) -> &str {
        self.api.get(name).unwrap_or_else(|| {
            panic!("no api token {name:?} (bot, ada, ada_read, revoked, disabled_owner)")
        })
    }

    /// A claim of a named user's minted token (`sub`, `jti`, ...).
    fn claim(&self, user: &str, claim: &str) -> String {
        let payload = self.user(user).split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).expect("claims");
        match &claims[claim] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

fn now() -> i64 {
    support::unix_now() as i64
}

/// `"$now"`, `"$now+N"`, `"$now-N"` become numbers; `"$str:now+N"` the same as a string.
fn resolve_times(value: &mut Value) {
    match value {
        Value::String(s) => {
            let (as_string, rest) = match s.strip_prefix("$str:") {
                Some(r) => (true, r.to_owned()),
                None => match s.strip_prefix('$') {
                    Some(r) => (false, r.to_owned()),
                    None => return,
                },
            };
            let Some(offset) = rest.strip_prefix("now") else {
                return;
            };
            let n = if offset.is_empty() {
                now()
            } else {
                now() + offset.parse::<i64>().expect("$now+N")
            };
            *value = if as_string {
                Value::String(n.to_string())
            } else {
                Value::from(n)
            };
        }
        Value::Array(items) => items.iter_mut().for_each(resolve_times),
        Value::Object(map) => map.values_mut().for_each(resolve_times),
        _ => {}
    }
}

/// `$now`, `$now+N` and `$now-N` inside raw JSON text, as numbers.
fn times_in_text(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find("$now") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 4..];
        let sign_len = usize::from(rest.starts_with(['+', '-']));
        let digits = rest[sign_len..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let offset: i64 = if sign_len == 1 && digits > 0 {
            rest[..sign_len + digits].parse().expect("offset")
        } else {
            0
        };
        let used = if digits > 0 { sign_len + digits } else { 0 };
        out.push_str(&(now() + offset).to_string());
        rest = &rest[used..];
    }
    out.push_str(rest);
    out
}

fn merged(
    mut base: serde_json::Map<String, Value>,
    over: &Option<serde_json::Map<String, Value>>,
) -> Value {
    if let Some(over) = over {
        for (k, v) in over {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    let mut value = Value::Object(base);
    resolve_times(&mut value);
    value
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).expect("key file")
}

/// Placeholders expanded in every string of a JSON value.
fn expand_json(value: &mut Value, ctx: &Ctx<'_>) {
    match value {
        Value::String(s) => *s = expand(s, ctx),
        Value::Array(items) => items.iter_mut().for_each(|v| expand_json(v, ctx)),
        Value::Object(map) => map.values_mut().for_each(|v| expand_json(v, ctx)),
        _ => {}
    }
}

fn build_jwt(spec: &JwtSpec, ctx: &Ctx<'_>) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey};
    if let Some(token) = &spec.token {
        return expand(token, ctx);
    }
    let header_json = match &spec.header_raw {
        Some(raw) => expand(raw, ctx),
        None => {
            let base = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "test-hs256"});
            let mut v = merged(base.as_object().unwrap().clone(), &spec.header);
            expand_json(&mut v, ctx);
            v.to_string()
        }
    };
    let claims_json = match &spec.claims_raw {
        Some(raw) => times_in_text(&expand(raw, ctx)),
        None => {
            let base = serde_json::json!({
                "sub": "corpus-attacker", "email": "mallory@example.com", "name": "Mallory",
                "roles": ["admin"], "permissions": ["roles:read", "roles:write"],
                "iss": ISSUER, "aud": AUDIENCE, "iat": "$now", "exp": "$now+300",
                "jti": "corpus-jti",
            });
            let mut v = merged(base.as_object().unwrap().clone(), &spec.claims);
            expand_json(&mut v, ctx);
            v.to_string()
        }
    };
    let header_b64 = URL_SAFE_NO_PAD.encode(header_json.as_bytes());
    let mut payload_b64 = URL_SAFE_NO_PAD.encode(claims_json.as_bytes());
    let signed = format!("{header_b64}.{payload_b64}");
    let sign = |key: EncodingKey, alg: Algorithm| {
        jsonwebtoken::crypto::sign(signed.as_bytes(), &key, alg).expect("sign")
    };
    let hmac = |secret: &[u8], alg| sign(EncodingKey::from_secret(secret).unwrap(), alg);
    let mut signature = match &spec.signature {
        Some(s) => expand(s, ctx),
        None => match spec.sign.as_deref().unwrap_or("hs256") {
            "hs256" => hmac(support::SECRET.as_bytes(), Algorithm::HS256),
            "hs384" => hmac(support::SECRET.as_bytes(), Algorithm::HS384),
            "hs512" => hmac(support::SECRET.as_bytes(), Algorithm::HS512),
            "wrong-secret" => hmac(WRONG_SECRET.as_bytes(), Algorithm::HS256),
            // CVE-2015-9235: the RSA public key, as PEM bytes, used as the HMAC secret.
            "rs-public-key-as-hmac" => hmac(&pem("rs256.pub.pem"), Algorithm::HS256),
            "es-public-key-as-hmac" => hmac(&pem("es256.pub.pem"), Algorithm::HS256),
            "rs256" => sign(
                EncodingKey::from_rsa_pem(&pem("rs256.key.pem")).unwrap(),
                Algorithm::RS256,
            ),
            "ps256" => sign(
                EncodingKey::from_rsa_pem(&pem("rs256.key.pem")).unwrap(),
                Algorithm::PS256,
            ),
            "es256" => sign(
                EncodingKey::from_ec_pem(&pem("es256.key.pem")).unwrap(),
                Algorithm::ES256,
            ),
            "eddsa" => sign(
                EncodingKey::from_ed_pem(&pem("ed25519.key.pem")).unwrap(),
                Algorithm::EdDSA,
            ),
            "empty" => String::new(),
            // CVE-2022-21449: r = s = 0.
            "ecdsa-zero" => URL_SAFE_NO_PAD.encode([0u8; 64]),
            other => panic!("unknown sign {other:?}"),
        },
    };
    let mut tail = String::new();
    for t in &spec.tamper {
        match t.as_str() {
            "flip-signature" => {
                let last = signature.pop().unwrap_or('A');
                signature.push(if last == 'A' { 'B' } else { 'A' });
            }
            "pad-payload" => payload_b64.push_str("=="),
            "standard-base64-payload" => {
                payload_b64 =
                    base64::engine::general_purpose::STANDARD.encode(claims_json.as_bytes())
            }
            "extra-segment" => tail.push_str(".e30"),
            "drop-signature" => return format!("{header_b64}.{payload_b64}"),
            other => panic!("unknown tamper {other:?}"),
        }
    }
    format!("{header_b64}.{payload_b64}.{signature}{tail}")
}

/// Everything a case's placeholders can name.
struct Ctx<'a> {
    creds: &'a Credentials,
    jwt: Option<String>,
}

/// Expands `${ada}` (a user's token), `${api:bot}`, `${jwt}` (the case's token),
/// `${sub:ada}`/`${jti:ada}` (claims of a user's token) and `${repeat:N:text}`.
fn expand(text: &str, ctx: &Ctx<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("unclosed placeholder in {text:?}"));
        let name = &rest[start + 2..end];
        let value = if name == "jwt" {
            ctx.jwt.clone().expect("${jwt} without a credential.jwt")
        } else if name == "api:unknown" {
            // Well-formed, valid checksum, never issued.
            portcullis::identity::api_token::generate()
        } else if let Some(api) = name.strip_prefix("api:") {
            ctx.creds.api(api).to_owned()
        } else if let Some(user) = name.strip_prefix("sub:") {
            ctx.creds.claim(user, "sub")
        } else if let Some(user) = name.strip_prefix("jti:") {
            ctx.creds.claim(user, "jti")
        } else if let Some(spec) = name.strip_prefix("repeat:") {
            let (n, unit) = spec.split_once(':').expect("${repeat:N:text}");
            unit.repeat(n.parse().expect("repeat count"))
        } else {
            ctx.creds.user(name).to_owned()
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The placeholders of a case, its own token built.
fn case_ctx<'a>(case: &Case, creds: &'a Credentials) -> Ctx<'a> {
    let plain = Ctx { creds, jwt: None };
    let jwt = case
        .credential
        .as_ref()
        .and_then(|c| c.jwt.as_ref())
        .map(|spec| build_jwt(spec, &plain));
    Ctx { creds, jwt }
}

/// A case made concrete: placeholders expanded, the credential placed.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    host: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

fn materialize<'a>(case: &Case, creds: &'a Credentials) -> (Request, Ctx<'a>) {
    let cred = case.credential.clone().unwrap_or_default();
    let ctx = case_ctx(case, creds);
    let mut headers: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(k, v)| (expand(k, &ctx), expand(v, &ctx)))
        .collect();
    let token = if let Some(user) = &cred.user {
        Some(creds.user(user).to_owned())
    } else if let Some(api) = &cred.api_token {
        Some(creds.api(api).to_owned())
    } else {
        ctx.jwt.clone()
    };
    if let Some(token) = token {
        match cred.place.as_deref().unwrap_or("bearer") {
            "bearer" => headers.push(("Authorization".to_owned(), format!("Bearer {token}"))),
            "cookie" => headers.push(("Cookie".to_owned(), format!("jwt-token={token}"))),
            "x-api-token" => headers.push(("X-Api-Token".to_owned(), token)),
            "none" => {}
            other => panic!("{}: unknown credential place {other:?}", case.id),
        }
    }
    let request = Request {
        method: expand(&case.method, &ctx),
        target: expand(case.target.as_deref().unwrap_or("/"), &ctx),
        host: if case.no_host {
            None
        } else {
            Some(expand(case.host.as_deref().unwrap_or(DEFAULT_HOST), &ctx))
        },
        headers,
        body: case.body.as_ref().map(|b| expand(b, &ctx)),
    };
    (request, ctx)
}

fn to_bytes(text: &str, latin1: bool) -> Vec<u8> {
    if !latin1 {
        return text.as_bytes().to_vec();
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin1 character"))
        .collect()
}

/// The HTTP/1.1 bytes of a case.
fn h1_bytes(case: &Case, request: &Request, ctx: &Ctx<'_>) -> Vec<u8> {
    if let Some(raw) = &case.raw {
        return to_bytes(&expand(raw, ctx), case.latin1);
    }
    let version = case.version.as_deref().unwrap_or("HTTP/1.1");
    let mut text = format!("{} {} {version}\r\n", request.method, request.target);
    if let Some(host) = &request.host {
        text.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in &request.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = &request.body {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    if let Some(body) = &request.body {
        text.push_str(body);
    }
    to_bytes(&text, case.latin1)
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn deny_error(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        _ => "?",
    }
}

/// The identity headers portcullis set on an allow, as (name, value).
fn allow_headers(response: &CheckResponse) -> Option<Vec<(String, String)>> {
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => Some(
            ok.headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        ),
        _ => None,
    }
}

fn http_of(request: &CheckRequest) -> Option<&attribute_context::HttpRequest> {
    request.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// Checks one case through Envoy; returns the problems found.
async fn run_through_envoy(
    case: &Case,
    creds: &Credentials,
    envoy_port: u16,
    tap: &AuthzTap,
    upstream: &RecordingUpstream,
) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = case.expect();
    let (request, ctx) = materialize(case, creds);
    tap.take();
    upstream.take();
    tap.set_mode(case.tap);
    let response: WireResponse = match case.http.as_str() {
        "1.1" => wire::send_raw_h1(envoy_port, &h1_bytes(case, &request, &ctx)).await,
        "2" => {
            let host = request
                .host
                .clone()
                .unwrap_or_else(|| DEFAULT_HOST.to_owned());
            let uri = format!("http://{host}{}", request.target);
            let parsed: hyper::Uri = match uri.parse() {
                Ok(u) => u,
                Err(e) => return vec![format!("h2 client cannot send {uri:?}: {e}")],
            };
            let sent = parsed.path_and_query().map(|p| p.as_str()).unwrap_or("");
            if sent != request.target {
                return vec![format!(
                    "h2 client would send {sent:?}, not {:?}",
                    request.target
                )];
            }
            wire::send_h2(envoy_port, &request.method, &uri, &request.headers).await
        }
        other => return vec![format!("unknown http version {other:?}")],
    };
    tap.set_mode(TapMode::Forward);
    let checks = tap.take();
    let received = upstream.take();

    // Who decided.
    match expect.by {
        By::Envoy => {
            if !checks.is_empty() {
                problems.push(format!(
                    "expected Envoy to answer alone, but portcullis was asked {} time(s)",
                    checks.len()
                ));
            }
        }
        By::Portcullis if !expect.differential_only => {
            if checks.len() != 1 {
                problems.push(format!(
                    "expected portcullis to be asked once, asked {} time(s) (status {}, {:?})",
                    checks.len(),
                    response.status,
                    response.error
                ));
            }
        }
        By::Portcullis => {}
    }

    // Status and reason.
    if !expect.differential_only {
        let want = expect.status.expect("status");
        if response.status != want {
            problems.push(format!(
                "status {} ({}), expected {want}{}",
                response.status,
                response.error.as_deref().unwrap_or(response.body.trim()),
                expect
                    .reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(want) = &expect.authorized_path {
        let asked: Vec<&str> = checks
            .iter()
            .filter_map(|c| http_of(&c.request).map(|h| h.path.as_str()))
            .collect();
        if asked != [want.as_str()] {
            problems.push(format!(
                "portcullis was asked about {asked:?}, expected {want:?}"
            ));
        }
    }
    // A deny as portcullis sent it, and as the client received it through Envoy.
    let denied = checks
        .first()
        .and_then(|c| match &c.response.http_response {
            Some(HttpResponse::DeniedResponse(d)) => Some((
                d.status.as_ref().map(|s| s.code).unwrap_or(0),
                d.body.clone(),
            )),
            _ => None,
        });
    if let Some((code, sent)) = &denied {
        let body: Value = serde_json::from_str(sent).unwrap_or(Value::Null);
        if let Some(reason) = &expect.reason {
            if !expect.differential_only && body["reason"] != reason.as_str() {
                problems.push(format!("reason {}, expected {reason}", body["reason"]));
            }
        }
        if i32::from(response.status) != *code {
            problems.push(format!(
                "portcullis denied with {code}, the client got {}",
                response.status
            ));
        }
        if body["error"] != deny_error(u16::try_from(*code).unwrap_or(0)) {
            problems.push(format!(
                "deny body error {} for status {code}",
                body["error"]
            ));
        }
        if request.method != "HEAD" && case.raw.is_none() && response.body != *sent {
            problems.push(format!(
                "the client got body {:?}, portcullis sent {sent:?}",
                response.body
            ));
        }
        if body["decision_id"].as_str() != response.header("x-auth-decision-id") {
            problems.push("deny body and header name different decision ids".to_owned());
        }
    } else if expect.reason.is_some() && !expect.differential_only && response.status != 200 {
        problems.push(format!(
            "expected a portcullis deny ({:?}), got {} {}",
            expect.reason,
            response.status,
            response.body.trim()
        ));
    }
    if expect.by == By::Envoy && response.header("x-auth-decision-id").is_some() {
        problems.push("an Envoy rejection carries a portcullis decision id".to_owned());
    }

    // The differential property.
    let allowed: Vec<_> = checks
        .iter()
        .filter_map(|c| allow_headers(&c.response).map(|h| (c, h)))
        .collect();
    if received.len() > 1 {
        problems.push(format!("upstream received {} requests", received.len()));
    }
    if !received.is_empty() && allowed.is_empty() {
        problems.push("the upstream received a request portcullis never allowed".to_owned());
    }
    if received.is_empty() && !allowed.is_empty() {
        problems.push(format!(
            "portcullis allowed but the upstream received nothing (status {})",
            response.status
        ));
    }
    for got in &received {
        let ids = got.header_values("x-auth-decision-id");
        let Some((check, set)) = allowed.iter().find(|(_, set)| {
            set.iter()
                .any(|(k, v)| k == "x-auth-decision-id" && ids == [v.as_str()])
        }) else {
            problems.push(format!(
                "upstream request has decision ids {ids:?}, none of them an allow"
            ));
            continue;
        };
        let http = http_of(&check.request).expect("http attributes");
        if got.target != http.path {
            problems.push(format!(
                "upstream target {:?} differs from the path portcullis authorized {:?}",
                got.target, http.path
            ));
        }
        let hosts = got.header_values("host");
        if hosts != [http.host.as_str()] {
            problems.push(format!(
                "upstream Host {hosts:?} differs from the host portcullis authorized {:?}",
                http.host
            ));
        }
        if got.method != http.method {
            problems.push(format!(
                "upstream method {:?} differs from the authorized {:?}",
                got.method, http.method
            ));
        }
        // Identity headers: exactly portcullis' own, each once.
        let mut upstream_auth: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-auth-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let mut ours = set.clone();
        upstream_auth.sort();
        ours.sort();
        let mut names: Vec<&str> = upstream_auth.iter().map(|(k, _)| k.as_str()).collect();
        names.dedup();
        if names.len() != upstream_auth.len() {
            problems.push(format!(
                "an x-auth-* header reached the upstream twice: {upstream_auth:?}"
            ));
        }
        if upstream_auth != ours {
            problems.push(format!(
                "upstream x-auth-* headers {upstream_auth:?} are not exactly portcullis' {ours:?}"
            ));
        }
        if let Some(want) = &expect.upstream_target {
            if &got.target != want {
                problems.push(format!(
                    "upstream target {:?}, expected {want:?}",
                    got.target
                ));
            }
        }
        for (name, values) in &expect.upstream {
            let values: Vec<String> = values.iter().map(|v| expand(v, &ctx)).collect();
            let got_values = got.header_values(name);
            if got_values != values {
                problems.push(format!(
                    "upstream {name} {got_values:?}, expected {values:?}"
                ));
            }
        }
    }
    if !problems.is_empty() {
        for check in &checks {
            if let Some(http) = http_of(&check.request) {
                problems.push(format!(
                    "(portcullis was asked: {} {:?} host {:?})",
                    http.method, http.path, http.host
                ));
            }
        }
    }
    problems
}

/// The CheckRequest Envoy would send for a case if it forwarded the request unchanged.
fn check_request_for(case: &Case, creds: &Credentials) -> CheckRequest {
    if let Some(spec) = &case.grpc_request {
        let ctx = case_ctx(case, creds);
        if spec.no_http {
            return CheckRequest {
                attributes: Some(AttributeContext::default()),
            };
        }
        let mut entries: Vec<HeaderValue> = spec
            .headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: expand(k, &ctx),
                raw_value: expand(v, &ctx).into_bytes(),
                ..Default::default()
            })
            .collect();
        for (k, hex) in &spec.headers_hex {
            entries.push(HeaderValue {
                key: k.clone(),
                raw_value: decode_hex(hex),
                ..Default::default()
            });
        }
        let mut request = support::check_request(
            &spec.method.clone().unwrap_or_else(|| "GET".to_owned()),
            &spec.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            &spec
                .path
                .as_deref()
                .map(|p| expand(p, &ctx))
                .unwrap_or_default(),
            &[],
        );
        let http = request
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .as_mut()
            .unwrap();
        http.headers = spec
            .legacy_headers
            .iter()
            .map(|(k, v)| (k.clone(), expand(v, &ctx)))
            .collect();
        if !entries.is_empty() {
            http.header_map = Some(HeaderMap { headers: entries });
        }
        return request;
    }
    let (request, _ctx) = materialize(case, creds);
    let host = request.host.clone().unwrap_or_default();
    let mut check = support::check_request(&request.method, &host, &request.target, &[]);
    let http = check
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    // As Envoy sends them with `encode_raw_headers`: names lower-cased, repeats separate.
    http.header_map = Some(HeaderMap {
        headers: request
            .headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_ascii_lowercase(),
                raw_value: to_bytes(v, case.latin1),
                ..Default::default()
            })
            .collect(),
    });
    check
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

async fn run_through_grpc(case: &Case, creds: &Credentials, service: &CheckService) -> Vec<String> {
    let Some((status, reason, upstream)) = case.grpc_expectation() else {
        return Vec::new();
    };
    let request = check_request_for(case, creds);
    let response = service.decide(&request).await;
    let mut problems = Vec::new();
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            if status != 200 {
                problems.push(format!("gRPC: allowed, expected {status} {reason:?}"));
            }
            let headers: Vec<(String, String)> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            if names.len() != before {
                problems.push(format!("gRPC: an identity header set twice: {headers:?}"));
            }
            let ctx = case_ctx(case, creds);
            for (name, values) in &upstream {
                let values: Vec<String> = values.iter().map(|v| expand(v, &ctx)).collect();
                let got: Vec<String> = headers
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .collect();
                if got != values {
                    problems.push(format!("gRPC: {name} {got:?}, expected {values:?}"));
                }
            }
            // Every client-sent x-auth-* header is overwritten or removed.
            let sent: Vec<String> = http_of(&request)
                .map(|h| {
                    let raw = h
                        .header_map
                        .iter()
                        .flat_map(|m| m.headers.iter())
                        .map(|e| e.key.clone());
                    raw.chain(h.headers.keys().cloned()).collect()
                })
                .unwrap_or_default();
            for name in sent {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("x-auth-")
                    && !names.contains(&lower.as_str())
                    && !ok.headers_to_remove.contains(&lower)
                {
                    problems.push(format!(
                        "gRPC: client header {name:?} neither overwritten nor removed"
                    ));
                }
            }
        }
        Some(HttpResponse::DeniedResponse(d)) => {
            let code = d.status.as_ref().map(|s| s.code).unwrap_or(0);
            let body: Value = serde_json::from_str(&d.body).unwrap_or(Value::Null);
            if code != i32::from(status) {
                problems.push(format!(
                    "gRPC: denied {code} {}, expected {status} {reason:?}",
                    body["reason"]
                ));
            } else if let Some(reason) = &reason {
                if body["reason"] != reason.as_str() {
                    problems.push(format!(
                        "gRPC: reason {}, expected {reason}",
                        body["reason"]
                    ));
                }
            }
        }
        other => problems.push(format!("gRPC: not an OK or denied response: {other:?}")),
    }
    if response.status.is_none() {
        problems.push("gRPC: a CheckResponse without a status".to_owned());
    }
    problems
}

/// The in-process Check service over the corpus' config and database, as `serve` builds it
/// (or broken the way `kind` says).
async fn in_process_service(config_path: &Path, kind: GrpcService) -> CheckService {
    use portcullis::authz::Authorizer;
    let config = portcullis::config::Config::load(Some(config_path), |_| None).expect("config");
    let store = portcullis::app::open_store(&config).await.expect("store");
    let identifier = portcullis::app::identifier(&config).expect("identifier");
    let snapshot = match kind {
        GrpcService::NoPolicy => None,
        _ => Some(Arc::new(
            portcullis::manage::load_snapshot(&store)
                .await
                .expect("snapshot"),
        )),
    };
    if kind == GrpcService::StoreDown {
        // The database goes away after the snapshot loaded: nothing on the request path may
        // need it (API tokens are in the snapshot too).
        store.close().await;
    }
    let handle = Arc::new(ArcSwapOption::from(snapshot));
    let authorizer = Authorizer::new(handle, Arc::new(identifier))
        .with_permission_source(config.jwt.permissions_from);
    CheckService::new(Arc::new(authorizer))
}

fn describe(file: &str, case: &Case, problems: &[String]) -> String {
    let note = case
        .note
        .as_deref()
        .map(|n| format!("\n  ({n})"))
        .unwrap_or_default();
    format!(
        "{file} {} [{}]:{note}\n  {}",
        case.id,
        case.source,
        problems.join("\n  ")
    )
}

fn report(run: &str, failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{run}: {} of {total} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Rows of SECURITY.md §1–4 that the corpus must keep covering, by the source a case names.
const REQUIRED_SOURCES: &[&str] = &[
    "CVE-2019-9901",
    "CVE-2021-29492",
    "CVE-2021-31920",
    "CVE-2026-26205",
    "CVE-2021-32779",
    "CVE-2021-39156",
    "CVE-2026-73511",
    "CVE-2026-73551",
    "CVE-2026-73553",
    "CVE-2023-27488",
    "GHSA-7rh7-c77v-6434",
    "CVE-2026-32811",
    "CVE-2026-73547",
    "CVE-2021-39155",
    "CVE-2025-64484",
    "CVE-2021-32777",
    "CVE-2020-25017",
    "CVE-2022-23540",
    "CVE-2015-9235",
    "CVE-2026-44699",
    "CVE-2018-0114",
    "CVE-2026-25537",
    "CVE-2022-21449",
    "SECURITY.md §1",
    "SECURITY.md §2",
    "SECURITY.md §3",
    "SECURITY.md §4",
    "envoy path_utility_test",
    "istio normalization",
];

#[test]
fn corpus_is_well_formed() {
    let corpus = load_corpus();
    assert!(
        corpus.len() >= MIN_CASES,
        "the corpus has {} cases, fewer than {MIN_CASES}",
        corpus.len()
    );
    let mut ids = HashMap::new();
    for Loaded { file, case } in &corpus {
        if let Some(other) = ids.insert(case.id.clone(), file.clone()) {
            panic!("case id {:?} in {file} and {other}", case.id);
        }
        assert!(!case.source.trim().is_empty(), "{}: no source", case.id);
        match case.transport {
            Transport::Envoy => {
                let e = case.expect();
                assert!(
                    e.differential_only || e.status.is_some(),
                    "{}: no status",
                    case.id
                );
                if let (Some(status), By::Portcullis, false) = (e.status, e.by, e.differential_only)
                {
                    if status != 200 {
                        assert!(
                            e.reason.is_some(),
                            "{}: a portcullis deny names its reason",
                            case.id
                        );
                    }
                }
                assert!(
                    case.target.is_some() || case.raw.is_some(),
                    "{}: no target",
                    case.id
                );
                assert!(
                    ["1.1", "2"].contains(&case.http.as_str()),
                    "{}: http",
                    case.id
                );
            }
            Transport::Grpc => {
                assert!(case.grpc_request.is_some(), "{}: grpc_request", case.id);
                assert!(
                    matches!(case.grpc, Some(GrpcExpect::Decision { .. })),
                    "{}: a gRPC-only case needs a grpc expectation",
                    case.id
                );
            }
        }
        if let Some((status, reason, _)) = case.grpc_expectation() {
            let code = reason.as_deref();
            let consistent = match status {
                200 => code.is_none(),
                401 => matches!(
                    code,
                    Some("missing_credential" | "invalid_token" | "ambiguous_credential")
                ),
                400 => matches!(code, Some("invalid_header")),
                403 => matches!(code, Some("invalid_path" | "no_matching_activity")),
                503 => matches!(code, Some("policy_unavailable")),
                _ => false,
            };
            assert!(
                consistent,
                "{}: status {status} with reason {code:?}",
                case.id
            );
        }
    }
    for source in REQUIRED_SOURCES {
        assert!(
            corpus.iter().any(|l| l.case.source.contains(source)),
            "no corpus case names {source:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_envoy() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_corpus_config(dir.path());
    let creds = Credentials::make(&config);
    let portcullis = support::Portcullis::start(&config).await;
    let (tap, tap_addr) = AuthzTap::start(portcullis.addr).await;
    let (upstream, upstream_addr) = RecordingUpstream::start().await;
    let envoy = support::Envoy::start(tap_addr, upstream_addr).await;

    let mut failures = Vec::new();
    let mut run = 0;
    for Loaded { file, case } in &corpus {
        if case.transport != Transport::Envoy {
            continue;
        }
        run += 1;
        let problems = run_through_envoy(case, &creds, envoy.port, &tap, &upstream).await;
        if !problems.is_empty() {
            failures.push(describe(file, case, &problems));
        }
    }
    report("through Envoy", &failures, run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_grpc() {
    let corpus = load_corpus();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_corpus_config(dir.path());
    let creds = Credentials::make(&config);
    let mut services = HashMap::new();
    for kind in [
        GrpcService::Serving,
        GrpcService::NoPolicy,
        GrpcService::StoreDown,
    ] {
        services.insert(kind, in_process_service(&config, kind).await);
    }

    let mut failures = Vec::new();
    let mut run = 0;
    for Loaded { file, case } in &corpus {
        if case.grpc_expectation().is_none() {
            continue;
        }
        run += 1;
        let problems = run_through_grpc(case, &creds, &services[&case.grpc_service]).await;
        if !problems.is_empty() {
            failures.push(describe(file, case, &problems));
        }
    }
    assert!(run > 0, "no case ran over gRPC");
    report("through gRPC", &failures, run);
}
