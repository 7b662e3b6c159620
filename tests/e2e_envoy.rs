//! End to end through real Envoy 1.40 running the shipped `envoy/envoy.yaml`, with portcullis
//! and a header-echo upstream on ephemeral ports.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use support::Stack;

/// A JWT's claims, read without verifying (the test minted it).
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_cookie_callers_are_allowed_and_identified() {
    let stack = Stack::start().await;
    let ada = stack.token("ada@example.com");

    let bearer = format!("Bearer {ada}");
    let r = stack
        .envoy
        .get("/api/v1/roles", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/api/v1/roles");
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);
    assert_eq!(r.upstream_header("x-auth-name"), vec!["Ada Lovelace"]);
    assert_eq!(r.upstream_header("x-auth-user-id").len(), 1);
    assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["user"]);
    assert_eq!(r.upstream_header("x-auth-credential"), vec!["jwt"]);
    assert_eq!(r.upstream_header("x-auth-roles"), vec!["admin"]);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read,roles:write"]
    );
    assert_eq!(r.upstream_header("x-auth-decision-id").len(), 1);

    // Single sign-on: the same token in the parent-domain cookie.
    let cookie = format!("theme=dark; jwt-token={ada}");
    let r = stack
        .envoy
        .get("/api/v1/roles/7/users", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);

    // Host-scoped activity: PUT is granted on allocations.example.com only.
    let r = stack
        .envoy
        .send("PUT", "/api/v1/roles/7", &[("authorization", &bearer)])
        .await;
    assert_eq!(
        r.status, 403,
        "host app.example.com is not granted: {}",
        r.body
    );

    // A public route needs no credential, and the upstream is told the caller is anonymous.
    let r = stack.envoy.get("/healthz", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["anonymous"]);
    assert!(r.upstream_header("x-auth-user-id").is_empty());

    // `authenticated` applies to any identified caller, whatever their roles.
    let alan = format!("Bearer {}", stack.token("alan@example.com"));
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/me", &[("authorization", &alan)])
            .await
            .status,
        200
    );
    assert_eq!(stack.envoy.get("/api/v1/me", &[]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_callers_get_401_and_unpermitted_callers_403() {
    let stack = Stack::start().await;

    let r = stack.envoy.get("/api/v1/roles", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="portcullis""#)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["reason"], "missing_credential");
    assert!(body["decision_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));

    let r = stack
        .envoy
        .get("/api/v1/roles", &[("authorization", "Bearer not.a.jwt")])
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.contains(r#"error="invalid_token""#)),
        "{r:?}"
    );
    assert_eq!(r.json()["reason"], "invalid_token");

    // A token signed with another key.
    let forged = {
        let t = stack.token("ada@example.com");
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[2] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        parts.join(".")
    };
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await;
    assert_eq!(r.status, 401);

    // Grace is a viewer: may read roles, may not create one.
    let grace = format!("Bearer {}", stack.token("grace@example.com"));
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("authorization", &grace)])
            .await
            .status,
        200
    );
    let r = stack
        .envoy
        .send("POST", "/api/v1/roles", &[("authorization", &grace)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.json()["reason"], "no_matching_activity");

    // Ambiguous credentials are refused, never guessed.
    let ada = format!("Bearer {}", stack.token("ada@example.com"));
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("authorization", &grace), ("authorization", &ada)],
        )
        .await;
    assert_eq!(r.status, 401, "two Authorization headers: {}", r.body);
    assert_eq!(r.json()["reason"], "ambiguous_credential");
    let grace_token = grace.trim_start_matches("Bearer ");
    let two_cookies = format!("jwt-token={grace_token}; jwt-token=x.y.z");
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("cookie", &two_cookies)])
            .await
            .status,
        401
    );
    let other_cookie = format!("jwt-token={}", ada.trim_start_matches("Bearer "));
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("authorization", &grace), ("cookie", &other_cookie)],
        )
        .await;
    assert_eq!(r.status, 401, "bearer and a different cookie");
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("authorization", "Basic YTpi")])
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let stack = Stack::start().await;
    let token = stack.token("grace@example.com");
    let grace = format!("Bearer {token}");
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[
                ("authorization", &grace),
                ("x-auth-permissions", "admin"),
                ("x-auth-roles", "admin"),
                ("x-auth-user-id", "1"),
                ("x-auth-email", "root@example.com"),
                ("x-auth-token-id", "forged"),
                ("x-auth-anything", "forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read"]
    );
    assert_eq!(r.upstream_header("x-auth-roles"), vec!["viewer"]);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["grace@example.com"]);
    // Exactly one value each, and it is portcullis' (an appended copy would fail here too).
    let claims = payload(&token);
    assert_eq!(
        r.upstream_header("x-auth-user-id"),
        vec![claims["sub"].as_str().unwrap().to_owned()]
    );
    assert_eq!(r.upstream_header("x-auth-anything"), Vec::<String>::new());
    // The minted token has a jti, so x-auth-token-id is ours, not the client's.
    assert_eq!(
        r.upstream_header("x-auth-token-id"),
        vec![claims["jti"].as_str().unwrap().to_owned()]
    );

    // Anonymous on a public route: every x-auth-* the client sent is removed.
    let r = stack
        .envoy
        .get(
            "/healthz",
            &[
                ("x-auth-user-id", "1"),
                ("x-auth-permissions", "admin"),
                ("X-Auth-Email", "a@b"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.upstream_header("x-auth-user-id").is_empty());
    assert!(r.upstream_header("x-auth-email").is_empty());
    assert_eq!(r.upstream_header("x-auth-permissions"), vec!["public"]);

    // Underscore variants are refused by Envoy before they could be smuggled (CVE-2025-64484).
    let r = stack
        .envoy
        .get("/healthz", &[("x_auth_user_id", "1")])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_do_not_change_the_decision_and_path_tricks_are_denied() {
    let stack = Stack::start().await;
    let grace = format!("Bearer {}", stack.token("grace@example.com"));
    let auth = [("authorization", grace.as_str())];

    let r = stack
        .envoy
        .get("/api/v1/roles?filter=/admin&x=1", &auth)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["path"],
        "/api/v1/roles?filter=/admin&x=1",
        "the upstream gets the query untouched"
    );
    assert_eq!(
        stack.envoy.get("/healthz?/api/v1/roles", &[]).await.status,
        200
    );
    assert_eq!(
        stack.envoy.get("/api/v1/admin?/healthz", &[]).await.status,
        401
    );
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/admin?/api/v1/roles", &auth)
            .await
            .status,
        403
    );

    // Each of these must never reach the upstream with a 200.
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
        let r = stack.envoy.get(path, &auth).await;
        assert_ne!(r.status, 200, "{path} was allowed: {}", r.body);
        assert!(
            [400, 401, 403, 404].contains(&r.status),
            "{path}: unexpected {}",
            r.status
        );
    }
    // A path Envoy normalizes is decided as normalized, and that is what the upstream sees.
    let r = stack.envoy.get("/api/v1/x/../roles", &auth).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/api/v1/roles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_fails_closed_when_portcullis_is_stopped() {
    let mut stack = Stack::start().await;
    let ada = format!("Bearer {}", stack.token("ada@example.com"));
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("authorization", &ada)])
            .await
            .status,
        200
    );
    stack.portcullis.proc.kill();
    for path in ["/api/v1/roles", "/healthz"] {
        for _ in 0..5 {
            let r = stack.envoy.get(path, &[("authorization", &ada)]).await;
            assert!(
                r.status == 503 || r.status == 403,
                "{path}: {} {}",
                r.status,
                r.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_stops_at_the_gate_and_other_cookies_pass() {
    let stack = Stack::start().await;
    let ada = stack.token("ada@example.com");
    let bearer = format!("Bearer {ada}");
    let cookies = format!("theme=dark; jwt-token={ada}; lang=fr");

    // A Bearer caller with other cookies: the upstream gets neither the token nor our cookie.
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("authorization", &bearer), ("cookie", &cookies)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("authorization"), Vec::<String>::new());
    assert_eq!(r.upstream_header("cookie"), vec!["theme=dark; lang=fr"]);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);

    // The cookie alone, sent as two Cookie headers: the other one is kept.
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[
                ("cookie", "theme=dark"),
                ("cookie", &format!("jwt-token={ada}")),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("cookie"), vec!["theme=dark"]);

    // Only our cookie: no Cookie header at all upstream.
    let r = stack
        .envoy
        .get("/api/v1/roles", &[("cookie", &format!("jwt-token={ada}"))])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("cookie"), Vec::<String>::new());

    // An API token in its own header stops here too.
    let (_, token) = stack
        .api_token(&["--service-account", "reporting-bot", "--label", "t"])
        .await;
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("x-api-token", &token), ("cookie", "a=1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-api-token"), Vec::<String>::new());
    assert_eq!(r.upstream_header("cookie"), vec!["a=1"]);

    // Anonymous callers' cookies are not ours to touch.
    let r = stack.envoy.get("/healthz", &[("cookie", "a=1; b=2")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("cookie"), vec!["a=1; b=2"]);
}
