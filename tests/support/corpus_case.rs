//! The bypass corpus' case format and everything a case needs before it is sent: loading
//! `tests/corpus/*.yaml`, the config and credentials a run uses, building hostile JWTs,
//! expanding placeholders, and turning a case into a concrete request (see
//! `tests/corpus/README.md`). Used by `tests/corpus.rs`.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::recording::TapMode;
use crate::support;

pub const DEFAULT_HOST: &str = "app.example.com";
pub const ISSUER: &str = "portcullis-test";
pub const AUDIENCE: &str = "portcullis";
/// A secret that is not the configured one, for forged HMAC signatures.
const WRONG_SECRET: &str = "not-the-configured-secret-0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// The case format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    /// A CVE/GHSA id, or the rule in SECURITY.md the case tests.
    pub source: String,
    #[serde(default)]
    pub note: Option<String>,
    /// `"1.1"` (raw socket, default) or `"2"` (h2c).
    #[serde(default = "default_http")]
    pub http: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// Send no `Host` header at all (HTTP/1.1 only).
    #[serde(default)]
    pub no_host: bool,
    /// `HTTP/1.1` unless given (`HTTP/1.0`, `HTTP/0.9`, garbage).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub credential: Option<CredentialSpec>,
    #[serde(default)]
    pub body: Option<String>,
    /// The whole HTTP/1.1 request, sent as written (placeholders expanded).
    #[serde(default)]
    pub raw: Option<String>,
    /// Map each character U+0000..=U+00FF of the request to one byte (for non-UTF-8 bytes).
    #[serde(default)]
    pub latin1: bool,
    /// Through Envoy and gRPC (default), or gRPC only (`grpc`) for what no client can send.
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub expect: Option<Expect>,
    /// What portcullis alone answers when handed this request as written. Defaults to
    /// `expect` for cases portcullis decides; `skip` for what means nothing without Envoy.
    #[serde(default)]
    pub grpc: Option<GrpcExpect>,
    /// For `transport: grpc`: the CheckRequest, field by field.
    #[serde(default)]
    pub grpc_request: Option<GrpcRequest>,
    /// Which in-process service answers over gRPC: `serving` (default), `no_policy` (no
    /// snapshot loaded yet) or `store_down` (the database is gone once the snapshot loaded).
    #[serde(default)]
    pub grpc_service: GrpcService,
    /// What the tap between Envoy and portcullis does: `forward` (default), or fails as a
    /// broken portcullis would (`error`, `unavailable`, `hang`).
    #[serde(default)]
    pub tap: TapMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpcService {
    #[default]
    Serving,
    NoPolicy,
    StoreDown,
}

pub fn default_http() -> String {
    "1.1".to_owned()
}

pub fn default_method() -> String {
    "GET".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Envoy,
    Grpc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// A user of `examples/policy.yaml` (ada, grace, alan): a token from `portcullis jwt mint`.
    #[serde(default)]
    pub user: Option<String>,
    /// An API token: `bot` (reporting-bot), `ada`, `ada_read` (ada limited to roles:read).
    #[serde(default)]
    pub api_token: Option<String>,
    /// A token built for this case.
    #[serde(default)]
    pub jwt: Option<JwtSpec>,
    /// Where it goes: `bearer` (default), `cookie`, `x-api-token`, or `none` (only `${jwt}`).
    #[serde(default, rename = "in")]
    pub place: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Merged over `{"alg": "HS256", "typ": "JWT", "kid": "test-hs256"}`; `null` removes a field.
    #[serde(default)]
    pub header: Option<serde_json::Map<String, Value>>,
    /// The header JSON exactly as written (duplicate keys, odd spacing).
    #[serde(default)]
    pub header_raw: Option<String>,
    /// Merged over valid admin claims; `null` removes a claim. `"$now+300"` is a number.
    #[serde(default)]
    pub claims: Option<serde_json::Map<String, Value>>,
    /// The payload exactly as written.
    #[serde(default)]
    pub claims_raw: Option<String>,
    /// hs256 (default) | hs384 | hs512 | rs256 | es256 | eddsa | wrong-secret |
    /// rs-public-key-as-hmac | empty | ecdsa-zero
    #[serde(default)]
    pub sign: Option<String>,
    /// The signature segment as written, instead of `sign`.
    #[serde(default)]
    pub signature: Option<String>,
    /// Changes after signing: flip-signature, pad-payload, extra-segment, drop-signature,
    /// standard-base64-payload.
    #[serde(default)]
    pub tamper: Vec<String>,
    /// A literal token; everything else is ignored.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub reason: Option<String>,
    /// `portcullis` (default): it was asked and decided; `envoy`: Envoy answered on its own.
    #[serde(default)]
    pub by: By,
    /// For an allow: the request target the upstream must receive.
    #[serde(default)]
    pub upstream_target: Option<String>,
    /// The request target portcullis must be asked about (after Envoy's normalization).
    #[serde(default)]
    pub authorized_path: Option<String>,
    /// For an allow: exact values of identity headers upstream.
    #[serde(default)]
    pub upstream: BTreeMap<String, Vec<String>>,
    /// Assert only the differential property, not a status (a known hole being fixed).
    #[serde(default)]
    pub differential_only: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[default]
    Portcullis,
    Envoy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GrpcExpect {
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
pub enum SkipWord {
    Skip,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcRequest {
    /// No `attributes.request.http` at all.
    #[serde(default)]
    pub no_http: bool,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    /// `header_map` entries (as with `encode_raw_headers`), values as text.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// `header_map` entries whose raw value is given in hex (non-UTF-8 bytes).
    #[serde(default)]
    pub headers_hex: Vec<(String, String)>,
    /// The legacy `headers` map instead of `header_map`.
    #[serde(default)]
    pub legacy_headers: BTreeMap<String, String>,
}

/// What portcullis alone must answer: status, reason, identity headers.
pub type GrpcDecision = (u16, Option<String>, BTreeMap<String, Vec<String>>);

#[derive(Debug)]
pub struct Loaded {
    pub file: String,
    pub case: Case,
}

pub fn corpus_dir() -> PathBuf {
    support::root().join("tests/corpus")
}

pub fn load_corpus() -> Vec<Loaded> {
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
    pub fn expect(&self) -> &Expect {
        self.expect
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no expect", self.id))
    }

    /// What portcullis alone must answer, or `None` when the case is not run over gRPC.
    pub fn grpc_expectation(&self) -> Option<GrpcDecision> {
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

pub fn key_file(name: &str) -> PathBuf {
    support::root().join("tests/data/keys").join(name)
}

/// The corpus' portcullis config: the HS256 key `jwt mint` signs with, plus RS256 and ES256
/// public keys, so that algorithm confusion between configured keys can be tried; the caller's
/// credential is forwarded to relay.example.com only.
pub fn write_corpus_config(dir: &Path) -> PathBuf {
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
forward_credential:
  hosts: [relay.example.com]
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
pub struct Credentials {
    pub users: HashMap<String, String>,
    pub api: HashMap<String, String>,
}

/// Issues an API token; returns (id, token).
pub fn issue_api_token(config: &Path, args: &[&str]) -> (String, String) {
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
    pub fn make(config: &Path) -> Self {
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

    pub fn user(&self, name: &str) -> &str {
        self.users
            .get(name)
            .unwrap_or_else(|| panic!("no user {name:?} (ada, grace, alan, grace_revoked)"))
    }

    pub fn api(&self, name: &str) -> &str {
        self.api.get(name).unwrap_or_else(|| {
            panic!("no api token {name:?} (bot, ada, ada_read, revoked, disabled_owner)")
        })
    }

    /// A claim of a named user's minted token (`sub`, `jti`, ...).
    pub fn claim(&self, user: &str, claim: &str) -> String {
        let payload = self.user(user).split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).expect("claims");
        match &claims[claim] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

pub fn now() -> i64 {
    support::unix_now() as i64
}

/// `"$now"`, `"$now+N"`, `"$now-N"` become numbers; `"$str:now+N"` the same as a string.
pub fn resolve_times(value: &mut Value) {
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
pub fn times_in_text(raw: &str) -> String {
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

pub fn merged(
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

pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).expect("key file")
}

/// Placeholders expanded in every string of a JSON value.
pub fn expand_json(value: &mut Value, ctx: &Ctx<'_>) {
    match value {
        Value::String(s) => *s = expand(s, ctx),
        Value::Array(items) => items.iter_mut().for_each(|v| expand_json(v, ctx)),
        Value::Object(map) => map.values_mut().for_each(|v| expand_json(v, ctx)),
        _ => {}
    }
}

pub fn build_jwt(spec: &JwtSpec, ctx: &Ctx<'_>) -> String {
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
pub struct Ctx<'a> {
    pub creds: &'a Credentials,
    pub jwt: Option<String>,
}

/// Expands `${ada}` (a user's token), `${api:bot}`, `${jwt}` (the case's token),
/// `${sub:ada}`/`${jti:ada}` (claims of a user's token) and `${repeat:N:text}`.
pub fn expand(text: &str, ctx: &Ctx<'_>) -> String {
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
pub fn case_ctx<'a>(case: &Case, creds: &'a Credentials) -> Ctx<'a> {
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
pub struct Request {
    pub method: String,
    pub target: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

pub fn materialize<'a>(case: &Case, creds: &'a Credentials) -> (Request, Ctx<'a>) {
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

pub fn to_bytes(text: &str, latin1: bool) -> Vec<u8> {
    if !latin1 {
        return text.as_bytes().to_vec();
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin1 character"))
        .collect()
}

/// The HTTP/1.1 bytes of a case.
pub fn h1_bytes(case: &Case, request: &Request, ctx: &Ctx<'_>) -> Vec<u8> {
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
