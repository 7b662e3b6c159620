//! API tokens and service accounts end to end: real Envoy, real portcullis, the echo upstream.

use crate::support;

use std::time::{Duration, Instant};

use support::{cli, cli_ok, Stack};

/// Polls until `path` answers `status` for `headers` (a change applied by another process is
/// picked up within the reload interval), failing after a bound.
async fn eventually(stack: &Stack, path: &str, headers: &[(&str, &str)], status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stack.envoy.get(path, headers).await;
        if r.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status}: last {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_service_account_tokens_carry_their_owners_permissions() {
    let stack = Stack::start().await;

    // A third-party integration acting for Ada, via Authorization: Bearer.
    let (id, token) = stack
        .api_token(&["--user", "ada@example.com", "--label", "zapier"])
        .await;
    let bearer = format!("Bearer {token}");
    let r = stack
        .envoy
        .send("POST", "/api/v1/roles", &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-auth-credential"), vec!["api-token"]);
    assert_eq!(r.upstream_header("x-auth-subject-type"), vec!["user"]);
    assert_eq!(r.upstream_header("x-auth-token-id"), vec![id.as_str()]);
    assert_eq!(r.upstream_header("x-auth-email"), vec!["ada@example.com"]);
    assert_eq!(r.upstream_header("x-auth-roles"), vec!["admin"]);
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read,roles:write"]
    );
    // ... and via the x-api-token header.
    let r = stack
        .envoy
        .get("/api/v1/roles", &[("x-api-token", &token)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A service account: only its own (viewer) permissions.
    let (_, bot) = stack
        .api_token(&["--service-account", "reporting-bot", "--expires-in", "90d"])
        .await;
    let r = stack
        .envoy
        .get("/api/v1/roles/3/users", &[("x-api-token", &bot)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("x-auth-subject-type"),
        vec!["service-account"]
    );
    assert_eq!(
        r.upstream_header("x-auth-user-id"),
        vec!["sa:reporting-bot"]
    );
    assert_eq!(r.upstream_header("x-auth-name"), vec!["reporting-bot"]);
    assert!(r.upstream_header("x-auth-email").is_empty());
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read"]
    );
    let r = stack
        .envoy
        .send("POST", "/api/v1/roles", &[("x-api-token", &bot)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // A token limited to one permission is denied elsewhere, though its owner is an admin.
    let (_, limited) = stack
        .api_token(&["--user", "ada@example.com", "--permissions", "roles:read"])
        .await;
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("x-api-token", &limited)])
            .await
            .status,
        200
    );
    let r = stack
        .envoy
        .send("POST", "/api/v1/roles", &[("x-api-token", &limited)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = stack
        .envoy
        .get("/api/v1/roles", &[("x-api-token", &limited)])
        .await;
    assert_eq!(
        r.upstream_header("x-auth-permissions"),
        vec!["authenticated,public,roles:read"]
    );
    assert!(
        !r.upstream_header("x-auth-roles")
            .contains(&"admin".to_owned()),
        "a limited token hides its owner's roles"
    );

    // A limit can never exceed the owner: Grace (viewer) cannot get roles:write.
    let (code, _, err) = cli(
        &stack.config,
        &[
            "token",
            "issue",
            "--user",
            "grace@example.com",
            "--permissions",
            "roles:write",
        ],
    );
    assert_eq!(code, 70, "refused: an error, not a deny");
    assert!(
        err.contains("does not hold permission \"roles:write\""),
        "{err}"
    );

    // Last use is recorded, in batches, off the request path.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = cli_ok(
            &stack.config,
            &["token", "list", "--owner", "ada@example.com"],
        );
        let line = list
            .lines()
            .find(|l| l.starts_with(&id))
            .expect("listed")
            .to_owned();
        assert!(!line.contains("pcs_"), "the secret is never listed");
        if line.matches('Z').count() >= 2 {
            break; // created and last-used timestamps
        }
        assert!(Instant::now() < deadline, "last use never recorded: {line}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_expired_malformed_and_ambiguous_tokens_are_401() {
    let stack = Stack::start().await;
    let (id, token) = stack.api_token(&["--user", "grace@example.com"]).await;
    let auth = [("x-api-token", token.as_str())];
    assert_eq!(stack.envoy.get("/api/v1/roles", &auth).await.status, 200);
    assert_eq!(stack.envoy.get("/api/v1/roles", &auth).await.status, 200);

    // Revoked by another process: every sidecar drops it within its reload interval, even
    // though this one had it cached.
    cli_ok(&stack.config, &["token", "revoke", &id]);
    eventually(&stack, "/api/v1/roles", &auth, 401).await;
    let r = stack.envoy.get("/api/v1/roles", &auth).await;
    assert_eq!(r.json()["reason"], "invalid_token");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|h| h.contains("invalid_token")));

    // Expired (never used, so never cached).
    let (id, expired) = stack.api_token(&["--user", "grace@example.com"]).await;
    let store = portcullis::store::SqlStore::connect(
        &format!(
            "sqlite://{}",
            stack.dir.path().join("portcullis.db").display()
        ),
        1,
    )
    .await
    .expect("store");
    for sql in [
        format!("UPDATE api_tokens SET expires_at = 1000 WHERE id = '{id}'"),
        "UPDATE policy_meta SET version = version + 1".to_owned(),
    ] {
        store.execute_raw(&sql).await.expect("expire");
    }
    eventually(&stack, "/api/v1/roles", &[("x-api-token", &expired)], 401).await;

    // Malformed tokens are refused at once (format and checksum, before any lookup).
    let mut wrong_checksum = token.clone().into_bytes();
    let last = wrong_checksum.len() - 1;
    wrong_checksum[last] = if wrong_checksum[last] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let wrong_checksum = String::from_utf8(wrong_checksum).expect("ascii");
    let malformed = [
        wrong_checksum.as_str(),
        &token[..token.len() - 1],
        "pcs_short",
        "pcs_0000000000000000000000000000000000000000000000000",
    ];
    for bad in malformed {
        let r = stack
            .envoy
            .get("/api/v1/roles", &[("x-api-token", bad)])
            .await;
        assert_eq!(r.status, 401, "{bad}");
        let r = stack
            .envoy
            .get(
                "/api/v1/roles",
                &[("authorization", &format!("Bearer {bad}"))],
            )
            .await;
        assert_eq!(r.status, 401, "{bad}");
    }

    // A well-formed token that was never issued: unknown (a lookup in the snapshot only).
    let unknown = portcullis::identity::api_token::generate();
    for _ in 0..5 {
        assert_eq!(
            stack
                .envoy
                .get("/api/v1/roles", &[("x-api-token", &unknown)])
                .await
                .status,
            401
        );
    }

    // Ambiguity: a token and a JWT, or two tokens.
    let (_, fresh) = stack.api_token(&["--user", "grace@example.com"]).await;
    let jwt = format!("Bearer {}", stack.token("grace@example.com"));
    let r = stack
        .envoy
        .get(
            "/api/v1/roles",
            &[("x-api-token", &fresh), ("authorization", &jwt)],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (401, Some("ambiguous_credential"))
    );
    let cookie = format!("jwt-token={}", stack.token("grace@example.com"));
    assert_eq!(
        stack
            .envoy
            .get(
                "/api/v1/roles",
                &[("x-api-token", &fresh), ("cookie", &cookie)]
            )
            .await
            .status,
        401
    );
    let bearer = format!("Bearer {fresh}");
    assert_eq!(
        stack
            .envoy
            .get(
                "/api/v1/roles",
                &[("x-api-token", &fresh), ("authorization", &bearer)]
            )
            .await
            .status,
        401
    );
    assert_eq!(
        stack
            .envoy
            .get("/api/v1/roles", &[("x-api-token", &fresh)])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_service_account_stops_its_tokens() {
    let stack = Stack::start().await;
    let (_, bot) = stack
        .api_token(&["--service-account", "reporting-bot"])
        .await;
    let auth = [("x-api-token", bot.as_str())];
    assert_eq!(stack.envoy.get("/api/v1/roles", &auth).await.status, 200);
    cli_ok(
        &stack.config,
        &["service-account", "disable", "reporting-bot"],
    );
    eventually(&stack, "/api/v1/roles", &auth, 401).await;

    // A service account declared with the CLI works like one from the policy file.
    cli_ok(
        &stack.config,
        &["service-account", "create", "ci-bot", "--roles", "admin"],
    );
    let (_, ci) = stack.api_token(&["--service-account", "ci-bot"]).await;
    eventually(&stack, "/api/v1/roles", &[("x-api-token", &ci)], 200).await;
    assert_eq!(
        stack
            .envoy
            .send("POST", "/api/v1/roles", &[("x-api-token", &ci)])
            .await
            .status,
        200
    );
    let listed = cli_ok(&stack.config, &["service-account", "list"]);
    assert!(
        listed.contains("ci-bot roles: admin") && listed.contains("reporting-bot (disabled)"),
        "{listed}"
    );
}
