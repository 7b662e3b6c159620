//! The gRPC adapter: `check()` called in process with hand-built CheckRequests, and a tonic
//! client against a real server bound to an ephemeral port (health, Check, graceful shutdown).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use portcullis::authz::{Authorizer, Decision};
use portcullis::check::browser::credential_forwarding;
use portcullis::check::{CheckService, PerRequest, Verdict};
use portcullis::config::{Config, JwtAlgorithm, JwtConfig, KeyConfig};
use portcullis::grpc::{self, access_request, check_response};
use portcullis::identity::Identifier;
use portcullis::keyring;
use portcullis::policy::{PolicyDocument, PolicySnapshot};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SECRET: &str = "grpc-test-secret-0123456789abcdef0123456789";
const POLICY: &str = include_str!("../examples/policy.yaml");

fn jwt_config() -> JwtConfig {
    JwtConfig {
        issuer: Some("grpc-test".to_owned()),
        keys: vec![KeyConfig {
            kid: "k".to_owned(),
            algorithm: JwtAlgorithm::Hs256,
            secret_env: Some("GRPC_TEST_SECRET".to_owned()),
            secret_file: None,
            public_key_file: None,
            private_key_file: None,
        }],
        ..JwtConfig::default()
    }
}

fn service(with_policy: bool) -> CheckService {
    let jwt = jwt_config();
    let keys = keyring::load(&jwt, |_| Some(SECRET.to_owned())).unwrap();
    let snapshot = Arc::new(ArcSwapOption::empty());
    if with_policy {
        let doc = PolicyDocument::from_yaml("policy", POLICY).unwrap();
        snapshot.store(Some(Arc::new(PolicySnapshot::compile(&doc, 3).unwrap())));
    }
    CheckService::new(Arc::new(Authorizer::new(
        snapshot,
        Arc::new(Identifier::new(keys, &jwt)),
    )))
}

fn token(claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn viewer() -> String {
    token(serde_json::json!({
        "sub": "7", "email": "zoë@example.com", "name": "Zoë Q", "roles": ["viewer"],
        "iss": "grpc-test", "exp": now() + 300, "jti": "j-1"
    }))
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    support::check_request(method, "App.Example.com:443", path, headers)
}

fn http_mut(
    req: &mut CheckRequest,
) -> &mut envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
    req.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
}

/// Like Envoy with `encode_raw_headers: true`: repeated headers are separate entries.
fn raw_request(method: &str, path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut req = request(method, path, &[]);
    http_mut(&mut req).header_map = Some(HeaderMap {
        headers: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                raw_value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
    });
    req
}

async fn check(svc: &CheckService, req: CheckRequest) -> CheckResponse {
    grpc::decide(svc, &req).await
}

fn ok_headers(res: &CheckResponse) -> HashMap<String, (String, i32)> {
    match &res.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .map(|h| {
                let hv = h.header.as_ref().unwrap();
                (hv.key.clone(), (hv.value.clone(), h.append_action))
            })
            .collect(),
        other => panic!("expected an OK response, got {other:?}"),
    }
}

fn denied(res: &CheckResponse) -> (i32, serde_json::Value, HashMap<String, String>) {
    match &res.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.as_ref().unwrap().code,
            serde_json::from_str(&d.body).unwrap(),
            d.headers
                .iter()
                .map(|h| h.header.as_ref().unwrap())
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        ),
        other => panic!("expected a denied response, got {other:?}"),
    }
}

#[tokio::test]
async fn allow_sets_identity_headers_with_overwrite_and_removes_client_copies() {
    let svc = service(true);
    let bearer = format!("Bearer {}", viewer());
    let res = check(
        &svc,
        request(
            "GET",
            "/api/v1/roles/9/users?x=1",
            &[
                ("authorization", &bearer),
                ("x-auth-permissions", "admin"),
                ("x-auth-impersonate", "root"),
                ("x-auth-email", "root@example.com"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status.as_ref().unwrap().code, 0);
    let headers = ok_headers(&res);
    let overwrite = 2; // OVERWRITE_IF_EXISTS_OR_ADD
    assert_eq!(headers["x-auth-user-id"], ("7".to_owned(), overwrite));
    assert_eq!(
        headers["x-auth-email"].0, "zo%C3%AB@example.com",
        "non-ASCII is percent-encoded"
    );
    assert_eq!(headers["x-auth-name"].0, "Zo%C3%AB Q");
    assert_eq!(headers["x-auth-subject-type"].0, "user");
    assert_eq!(headers["x-auth-roles"].0, "viewer");
    assert_eq!(
        headers["x-auth-permissions"].0,
        "authenticated,public,roles:read"
    );
    assert_eq!(headers["x-auth-credential"].0, "jwt");
    assert_eq!(headers["x-auth-token-id"].0, "j-1");
    assert!(!headers["x-auth-decision-id"].0.is_empty());
    assert!(headers.values().all(|(_, action)| *action == overwrite));
    let Some(HttpResponse::OkResponse(ok)) = &res.http_response else {
        unreachable!()
    };
    // Only what we do not overwrite is listed; what we set replaces the client's copy. The
    // caller's token stops here (forward_credential is off by default).
    assert_eq!(
        ok.headers_to_remove,
        vec!["authorization", "x-auth-impersonate"]
    );
    let meta = &res.dynamic_metadata.as_ref().unwrap().fields;
    assert_eq!(
        meta["user_id"].kind,
        Some(Kind::StringValue("7".to_owned()))
    );
    assert_eq!(
        meta["email"].kind,
        Some(Kind::StringValue("zoë@example.com".to_owned()))
    );
    assert_eq!(
        meta["matched_permission"].kind,
        Some(Kind::StringValue("roles:read".to_owned()))
    );
    assert!(matches!(&meta["permissions"].kind, Some(Kind::ListValue(l)) if l.values.len() == 3));
}

#[tokio::test]
async fn denials_carry_status_reason_and_challenge() {
    let svc = service(true);
    let (code, body, headers) = denied(&check(&svc, request("GET", "/api/v1/roles", &[])).await);
    assert_eq!(code, 401);
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["reason"], "missing_credential");
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="portcullis""#);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["x-auth-decision-id"],
        body["decision_id"].as_str().unwrap()
    );

    let expired = token(serde_json::json!({"sub": "7", "iss": "grpc-test", "exp": now() - 3600}));
    let (code, body, headers) = denied(
        &check(
            &svc,
            request(
                "GET",
                "/healthz",
                &[("authorization", &format!("Bearer {expired}"))],
            ),
        )
        .await,
    );
    assert_eq!(
        code, 401,
        "a bad credential is refused even on a public route"
    );
    assert_eq!(body["reason"], "invalid_token");
    assert!(headers["www-authenticate"].contains(r#"error="invalid_token""#));

    let bearer = format!("Bearer {}", viewer());
    let res = check(
        &svc,
        request("DELETE", "/api/v1/roles", &[("authorization", &bearer)]),
    )
    .await;
    let (code, body, headers) = denied(&res);
    assert_eq!(
        (code, body["error"].as_str(), body["reason"].as_str()),
        (403, Some("forbidden"), Some("no_matching_activity"))
    );
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(
        res.status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );

    for path in [
        "/api/v1/roles/../admin",
        "//api/v1/roles",
        "/api/v1/roles%2F9",
        "/api/v1/roles;a=b",
        "",
        "*",
    ] {
        let (code, body, _) =
            denied(&check(&svc, request("GET", path, &[("authorization", &bearer)])).await);
        assert_eq!(
            (code, body["reason"].as_str()),
            (403, Some("invalid_path")),
            "{path:?}"
        );
    }
    // CONNECT carries no :path.
    let (code, _, _) = denied(&check(&svc, request("CONNECT", "", &[])).await);
    assert_eq!(code, 403);
}

#[tokio::test]
async fn no_snapshot_is_a_503_and_never_an_error() {
    let svc = service(false);
    let res = check(&svc, request("GET", "/healthz", &[])).await;
    let (code, body, _) = denied(&res);
    assert_eq!(
        (code, body["error"].as_str(), body["reason"].as_str()),
        (503, Some("unavailable"), Some("policy_unavailable"))
    );
    assert_eq!(
        res.status.as_ref().unwrap().code,
        tonic::Code::Unavailable as i32
    );
    // An empty CheckRequest (no attributes at all) is an answer too.
    let res = grpc::decide(&svc, &CheckRequest::default()).await;
    assert!(matches!(
        res.http_response,
        Some(HttpResponse::DeniedResponse(_))
    ));
}

#[tokio::test]
async fn raw_headers_keep_repeats_apart() {
    let svc = service(true);
    let t = viewer();
    let bearer = format!("Bearer {t}");
    let res = check(
        &svc,
        raw_request("GET", "/api/v1/roles", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(ok_headers(&res)["x-auth-user-id"].0, "7");
    let res = check(
        &svc,
        raw_request(
            "GET",
            "/api/v1/roles",
            &[("authorization", &bearer), ("authorization", &bearer)],
        ),
    )
    .await;
    let (code, body, _) = denied(&res);
    assert_eq!(
        (code, body["reason"].as_str()),
        (401, Some("ambiguous_credential"))
    );
    let cookie = format!("jwt-token={t}");
    let res = check(
        &svc,
        raw_request(
            "GET",
            "/api/v1/roles",
            &[("cookie", &cookie), ("cookie", "jwt-token=a.b.c")],
        ),
    )
    .await;
    assert_eq!(denied(&res).0, 401);
    // A non-ASCII header name where the x-auth- prefix would be cut mid-character.
    let odd = raw_request(
        "GET",
        "/api/v1/roles",
        &[("authorization", &bearer), ("x-auth\u{e9}x", "v")],
    );
    assert_eq!(ok_headers(&check(&svc, odd).await)["x-auth-user-id"].0, "7");
    let res = check(
        &svc,
        raw_request(
            "GET",
            "/api/v1/roles",
            &[("cookie", "a=1"), ("cookie", &cookie)],
        ),
    )
    .await;
    assert_eq!(ok_headers(&res)["x-auth-user-id"].0, "7");
}

#[tokio::test]
async fn host_scoping_ignores_case_and_port() {
    let svc = service(true);
    let admin = token(
        serde_json::json!({"sub": "1", "roles": ["admin"], "iss": "grpc-test", "exp": now() + 60}),
    );
    let bearer = format!("Bearer {admin}");
    let mut req = request("PUT", "/api/v1/roles/5", &[("authorization", &bearer)]);
    http_mut(&mut req).host = "Allocations.EXAMPLE.com:8443".to_owned();
    assert!(matches!(
        check(&svc, req).await.http_response,
        Some(HttpResponse::OkResponse(_))
    ));
    let req = request("PUT", "/api/v1/roles/5", &[("authorization", &bearer)]);
    assert_eq!(denied(&check(&svc, req).await).0, 403);
}

fn server_config(dir: &std::path::Path) -> Config {
    let yaml = format!(
        "server: {{listen: '127.0.0.1:0', admin_listen: '127.0.0.1:0', shutdown_grace: 5s}}\ndatabase: {{url: 'sqlite://{}', reload_interval: 100ms}}\n",
        dir.join("grpc.db").display()
    );
    let config = Config::from_yaml(std::path::Path::new("grpc-test"), &yaml).unwrap();
    config.validate().unwrap();
    config
}

async fn health(channel: &tonic::transport::Channel) -> i32 {
    let req = HealthCheckRequest {
        service: "envoy.service.auth.v3.Authorization".to_owned(),
    };
    HealthClient::new(channel.clone())
        .check(req)
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

#[tokio::test]
async fn tonic_client_against_a_served_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path());
    let server = portcullis::app::Server::bind(&config).await.expect("binds");
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().expect("admin endpoint bound");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The empty store has a policy (version 0): SERVING once it is loaded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health(&channel).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = AuthorizationClient::new(channel.clone());
    let res = client
        .check(request("GET", "/healthz", &[]))
        .await
        .expect("a CheckResponse")
        .into_inner();
    // Nothing is granted in an empty policy: anonymous gets 401.
    assert_eq!(denied(&res).0, 401);

    // A policy applied through the store is picked up without a restart.
    let store = portcullis::store::SqlStore::connect(config.database.url.expose(), 1)
        .await
        .unwrap();
    portcullis::manage::apply(
        &store,
        &PolicyDocument::from_yaml("p", POLICY).unwrap(),
        false,
        false,
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = client
            .check(request("GET", "/healthz", &[]))
            .await
            .unwrap()
            .into_inner();
        if matches!(res.http_response, Some(HttpResponse::OkResponse(_))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "policy never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A policy that does not compile, written behind our back, leaves the last good one serving.
    store
        .execute_raw("UPDATE activities SET path = '/healthz(' WHERE path = '/healthz'")
        .await
        .unwrap();
    store
        .execute_raw("UPDATE policy_meta SET version = version + 1")
        .await
        .unwrap();
    // The reloader tries the broken version and reports it; the last good one keeps serving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = portcullis::cli::fetch_status(admin).await.unwrap();
        if status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not compile"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = client
        .check(request("GET", "/healthz", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(res.http_response, Some(HttpResponse::OkResponse(_))),
        "last good snapshot keeps serving"
    );

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("drains")
        .unwrap()
        .expect("clean exit");
    assert!(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
}

/// A stuck log reader never stalls a decision. portcullis serves with stderr into a pipe that
/// nobody reads, so the pipe fills after some 64 KiB; thousands of denied checks, each logged
/// at info, must all still be answered (a blocking log writer would hang on the full pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_stderr_never_blocks_a_check() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let config = support::prepared_config(dir.path(), &url, "1s", "token");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("admin_listen: 127.0.0.1:0", "admin_listen: null")
        .replace(
            "  listen: 127.0.0.1:0",
            &format!("  listen: 127.0.0.1:{port}"),
        );
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(support::portcullis_bin())
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Held open and never read.
    let _stuck = child.stderr.take();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let channel = loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            if health(&channel).await == 1 {
                break channel;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut client = AuthorizationClient::new(channel);
    for i in 0..3000 {
        let path = format!("/api/v1/roles?attempt={i}&padding={}", "x".repeat(100));
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            client.check(request("GET", &path, &[])),
        )
        .await
        .unwrap_or_else(|_| panic!("check {i} stalled behind the log writer"))
        .unwrap()
        .into_inner();
        assert_eq!(denied(&answered).0, 401, "check {i}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 8, hole 5: a header value that is not UTF-8 is refused as such (400 invalid_header),
/// before any credential parsing, never decoded lossily; valid headers beside it change nothing.
#[tokio::test]
async fn header_values_that_are_not_utf8_are_refused_explicitly() {
    let svc = service(true);
    let bearer = format!("Bearer {}", viewer());
    for (name, bytes) in [
        ("authorization", b"Bearer \xff\xfe".to_vec()),
        ("cookie", b"jwt-token=\xc3\x28".to_vec()),
        ("x-api-token", b"pcs_\x80".to_vec()),
    ] {
        let mut req = raw_request("GET", "/api/v1/roles", &[("authorization", &bearer)]);
        let map = http_mut(&mut req).header_map.as_mut().unwrap();
        map.headers.push(HeaderValue {
            key: name.to_owned(),
            raw_value: bytes,
            ..Default::default()
        });
        let (code, body, _) = denied(&check(&svc, req).await);
        assert_eq!(
            (code, body["reason"].as_str(), body["error"].as_str()),
            (400, Some("invalid_header"), Some("bad_request")),
            "{name}"
        );
    }
    // The same request with valid UTF-8 (including non-ASCII) is decided as usual.
    let req = raw_request(
        "GET",
        "/api/v1/roles",
        &[("authorization", &bearer), ("x-auth-note", "café")],
    );
    assert_eq!(ok_headers(&check(&svc, req).await)["x-auth-user-id"].0, "7");
}

/// Issue 8, hole 1, through the adapter: a signed token whose roles include names that an
/// upstream would split or misread; the upstream sees only valid names, from the
/// Authorization header and from the cookie alike.
#[tokio::test]
async fn invalid_role_names_are_dropped_for_header_and_cookie() {
    let svc = service(true);
    let t = token(serde_json::json!({
        "sub": "7", "roles": ["viewer", "viewer,admin", "ad min", "x;y", "a=b"],
        "iss": "grpc-test", "exp": now() + 300
    }));
    let bearer = format!("Bearer {t}");
    let cookie = format!("jwt-token={t}");
    for headers in [
        [("authorization", bearer.as_str())],
        [("cookie", cookie.as_str())],
    ] {
        let res = check(&svc, request("GET", "/api/v1/roles", &headers)).await;
        let h = ok_headers(&res);
        assert_eq!(h["x-auth-roles"].0, "viewer", "{:?}", headers[0].0);
        assert!(!h["x-auth-permissions"].0.contains("roles:write"));
    }
}

/// The server answers an allow in two encoded parts, the caller's identity part from a cache
/// and the per-request rest; decoded, they must be exactly the one message built from the
/// decision, on the first request (cache filled) and on a repeat (cache hit), with client
/// x-auth-* headers that are overwritten, removed, or the decision id.
#[tokio::test]
async fn two_part_answer_decodes_to_the_one_message() {
    let jwt = jwt_config();
    let keys = keyring::load(&jwt, |_| Some(SECRET.to_owned())).unwrap();
    let snapshot = Arc::new(ArcSwapOption::empty());
    let doc = PolicyDocument::from_yaml("policy", POLICY).unwrap();
    snapshot.store(Some(Arc::new(PolicySnapshot::compile(&doc, 3).unwrap())));
    let authorizer = Arc::new(Authorizer::new(
        snapshot.clone(),
        Arc::new(Identifier::new(keys, &jwt)),
    ));
    let svc = CheckService::new(authorizer.clone());
    let bearer = format!("Bearer {}", viewer());
    let cases = [
        raw_request(
            "GET",
            "/api/v1/roles",
            &[
                ("authorization", bearer.as_str()),
                ("x-auth-email", "forged@example.com"),
                ("X-Auth-Admin", "yes"),
                ("x-auth-decision-id", "forged"),
            ],
        ),
        raw_request("GET", "/healthz", &[("x-auth-user-id", "1")]),
    ];
    for (round, req) in [cases.clone(), cases].into_iter().flatten().enumerate() {
        let answer = grpc::answer(&svc, &req).await;
        assert!(
            !answer.encoded.is_empty(),
            "round {round}: an allow reuses its identity part"
        );
        let decoded = grpc::decide(&svc, &req).await;
        let id = ok_headers(&decoded)["x-auth-decision-id"].0.clone();
        let access = access_request(&req);
        let decision = authorizer.decide(&access).await;
        // The credential stops at the gate: the one per-request change of these allows.
        let extra = match &decision {
            Decision::Allow(allow) => PerRequest {
                stripping: credential_forwarding(&Config::default()).stripping(&access, allow),
                set_cookie: None,
            },
            Decision::Deny(_) => PerRequest::default(),
        };
        let expected = check_response(Verdict::of(&decision, &access, &id, extra));
        assert_eq!(decoded, expected, "round {round}");
    }
    // A new snapshot of the same version renders anew (the key holds its serial, not the
    // version): a role's permissions changed, and the upstream sees the change at once.
    let widened = POLICY.replace("viewer: [roles:read]", "viewer: [roles:read, roles:write]");
    assert_ne!(widened, POLICY, "the example policy's viewer role");
    let doc = PolicyDocument::from_yaml("policy", &widened).unwrap();
    snapshot.store(Some(Arc::new(PolicySnapshot::compile(&doc, 3).unwrap())));
    let req = raw_request("GET", "/healthz", &[("authorization", bearer.as_str())]);
    let decoded = grpc::decide(&svc, &req).await;
    let access = access_request(&req);
    let decision = authorizer.decide(&access).await;
    let id = ok_headers(&decoded)["x-auth-decision-id"].0.clone();
    let Decision::Allow(allow) = &decision else {
        panic!("allowed: {decision:?}")
    };
    let extra = PerRequest {
        stripping: credential_forwarding(&Config::default()).stripping(&access, allow),
        set_cookie: None,
    };
    assert_eq!(extra.stripping.remove, ["authorization"]);
    assert_eq!(
        decoded,
        check_response(Verdict::of(&decision, &access, &id, extra))
    );
    assert!(ok_headers(&decoded)["x-auth-permissions"]
        .0
        .contains("roles:write"));
}
