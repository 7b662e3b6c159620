//! The command line as an operator uses it: config errors, policy files, `check`, `jwt mint`,
//! and `serve` shutting down cleanly on SIGTERM.

use crate::support;

use support::{cli, cli_ok, root, write_config, Portcullis};

fn example() -> String {
    root().join("examples/policy.yaml").display().to_string()
}

#[test]
fn bad_config_is_one_line_and_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        root()
            .join("tests/data/keys")
            .join(name)
            .display()
            .to_string()
    };
    let cases: Vec<(String, &[&str])> = vec![
        ("colour: blue\n".into(), &["unknown field"]),
        ("server: {listen: nowhere}\n".into(), &["config file"]),
        ("jwt: {leeway: 1h}\n".into(), &["jwt.leeway"]),
        (
            "jwt: {keys: [{kid: a, algorithm: HS256, secret_env: NOT_SET_ANYWHERE_42}]}\n".into(),
            &["NOT_SET_ANYWHERE_42 is not set"],
        ),
        (
            "jwt: {keys: [{kid: a, algorithm: RS256, public_key_file: /nonexistent.pem}]}\n".into(),
            &["cannot read"],
        ),
        (
            "jwt: {keys: [{kid: a, algorithm: none, secret_env: X}]}\n".into(),
            &["jwt.keys[0].algorithm", "unknown variant `none`"],
        ),
        // Issue 8, hole 4: a 1024-bit RSA key from a PEM file is refused like one from a JWKS.
        (
            format!(
                "jwt: {{keys: [{{kid: weak, algorithm: RS256, public_key_file: {}}}]}}\n",
                key("rsa1024.pub.pem")
            ),
            &[
                r#"key "weak""#,
                "rsa1024.pub.pem",
                "1024 bits, fewer than the 2048",
            ],
        ),
        (
            format!(
                "jwt: {{keys: [{{kid: roca, algorithm: RS256, public_key_file: {}}}]}}\n",
                key("roca.pub.pem")
            ),
            &[r#"key "roca""#, "ROCA fingerprint"],
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, &text).unwrap();
        let (code, out, err) = cli(&path, &["config", "check"]);
        assert_eq!(code, 64, "{text}: {out}{err}");
        for want in expected {
            assert!(err.contains(want), "{text}: {err}");
        }
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let good = write_config(dir.path(), "");
    let out = cli_ok(&good, &["config", "check"]);
    assert!(out.contains("1 jwt key(s)"), "{out}");
    assert!(!out.contains(support::SECRET));
}

#[test]
fn bad_policy_files_name_the_entry_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    cli_ok(&config, &["policy", "apply", &example()]);
    let before = cli_ok(&config, &["policy", "export"]);
    let cases = [
        ("permissions: [", "bad.yaml"),
        (
            "permissions:\n  p:\n    activities: [FETCH /x]\n",
            "unknown method \"FETCH\"",
        ),
        (
            "permissions:\n  p:\n    activities: [\"GET /(\"]\n",
            "permission \"p\": activity GET /(: path regex does not compile",
        ),
        (
            "roles:\n  admin: [nope]\n",
            "role \"admin\": unknown permission \"nope\"",
        ),
        (
            "users:\n  - {email: x@example.com, roles: [ghost]}\n",
            "user \"x@example.com\": unknown role \"ghost\"",
        ),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = cli(&config, &["policy", "apply", path.to_str().unwrap()]);
        assert_eq!(code, 65, "{text}: {out}{err}");
        assert!(err.contains(expected), "{text}: {err}");
        assert!(err.contains("bad.yaml"), "names the file: {err}");
    }
    assert_eq!(
        cli_ok(&config, &["policy", "export"]),
        before,
        "nothing was written"
    );
}

#[test]
fn apply_is_idempotent_and_dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let first = cli_ok(&config, &["policy", "apply", &example()]);
    assert!(first.contains("+ role admin"), "{first}");
    assert!(cli_ok(&config, &["policy", "apply", &example()]).contains("no changes"));
    let exported = dir.path().join("exported.yaml");
    std::fs::write(&exported, cli_ok(&config, &["policy", "export"])).unwrap();
    assert!(cli_ok(
        &config,
        &["policy", "apply", "--prune", exported.to_str().unwrap()]
    )
    .contains("no changes"));

    let smaller = dir.path().join("smaller.yaml");
    std::fs::write(
        &smaller,
        "permissions:\n  public:\n    activities: [GET /healthz]\n",
    )
    .unwrap();
    let dry = cli_ok(
        &config,
        &[
            "policy",
            "apply",
            "--prune",
            "--dry-run",
            smaller.to_str().unwrap(),
        ],
    );
    assert!(
        dry.contains("- permission roles:write") && dry.contains("nothing written"),
        "{dry}"
    );
    assert!(cli_ok(&config, &["policy", "export"]).contains("roles:write"));

    let lint = dir.path().join("lint.yaml");
    std::fs::write(
        &lint,
        "permissions:\n  p:\n    activities: [GET /api/v1.0/x]\n",
    )
    .unwrap();
    let (code, _, err) = cli(&config, &["policy", "lint", lint.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(err.contains("unescaped '.'"), "{err}");
}

/// A config in `dir`, the example policy applied, and a 5-minute token for grace@example.com.
fn example_with_token(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let config = write_config(dir, "");
    cli_ok(&config, &["policy", "apply", &example()]);
    let token = cli_ok(
        &config,
        &["jwt", "mint", "--user", "grace@example.com", "--ttl", "5m"],
    );
    (config, token.trim().to_owned())
}

#[test]
fn check_explains_and_exits_by_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = example_with_token(dir.path());
    let token = token.as_str();

    let (code, out, _) = cli(
        &config,
        &["check", "--token", token, "GET", "/api/v1/roles/1/users"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#"permission "roles:read" grants GET /api/v1/roles/[^/]+/users"#),
        "{out}"
    );

    let (code, out, _) = cli(
        &config,
        &["check", "--token", token, "POST", "/api/v1/roles"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deny 403 no_matching_activity"), "{out}");

    let (code, out, _) = cli(&config, &["check", "GET", "/api/v1/roles"]);
    assert_eq!(
        (code, out.contains("deny 401 missing_credential")),
        (1, true),
        "{out}"
    );
    let (code, out, _) = cli(&config, &["check", "--token", "x.y.z", "GET", "/healthz"]);
    assert_eq!(
        (code, out.contains("deny 401 invalid_token")),
        (1, true),
        "{out}"
    );
    let (code, out, _) = cli(
        &config,
        &[
            "check",
            "--permissions",
            "roles:write",
            "--host",
            "allocations.example.com",
            "PUT",
            "/api/v1/roles/3",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(
        &config,
        &[
            "check",
            "--permissions",
            "roles:write",
            "PUT",
            "/api/v1/roles/3",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let (code, out, _) = cli(&config, &["check", "GET", "/healthz/../admin"]);
    assert_eq!((code, out.contains("invalid_path")), (1, true), "{out}");

    let (code, _, err) = cli(&config, &["jwt", "mint", "--user", "nobody@example.com"]);
    assert_eq!(code, 66, "not found, not a deny");
    assert!(err.contains("no user"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_not_serving_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    cli_ok(&config, &["policy", "apply", &example()]);
    let mut server = Portcullis::start(&config).await;
    // Logs are written off the request path: wait for the line rather than expect it now.
    server.proc.wait_for_log("policy snapshot loaded");
    let status = server.proc.terminate();
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        server.proc.log_text()
    );
    server.proc.wait_for_log("NOT_SERVING");
    let log = server.proc.log_text();
    assert!(!log.contains(support::SECRET), "the secret reached the log");
}

/// Issue 8, hole 3: a pruned user's id must never name the next user created, and a token
/// naming a deleted user is refused whether permissions come from the token or the store.
#[test]
fn a_deleted_users_token_never_gains_a_new_users_permissions() {
    let policy = "permissions:\n  roles:read:\n    activities: [GET /api/v1/roles]\n  \
                  roles:write:\n    activities: [POST /api/v1/roles]\n\
                  roles:\n  admin: [roles:read, roles:write]\n  viewer: [roles:read]\n";
    for mode in ["store", "token"] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let config = support::write_config_for(dir.path(), &url, "200ms", mode, "");
        let write = |name: &str, users: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{policy}users:\n{users}")).unwrap();
            path.display().to_string()
        };
        let keep = "  - {email: a@x.com, roles: [viewer]}\n  - {email: b@x.com, roles: [viewer]}\n";
        let with_old = write(
            "old.yaml",
            &format!("{keep}  - {{email: old@x.com, roles: [viewer]}}\n"),
        );
        cli_ok(&config, &["policy", "apply", &with_old]);
        let token = cli_ok(
            &config,
            &["jwt", "mint", "--user", "old@x.com", "--ttl", "5m"],
        );
        let token = token.trim();
        let (code, out, _) = cli(
            &config,
            &["check", "--token", token, "GET", "/api/v1/roles"],
        );
        assert_eq!(code, 0, "{mode}: the viewer may read: {out}");

        cli_ok(
            &config,
            &["policy", "apply", "--prune", &write("pruned.yaml", keep)],
        );
        let with_boss = write(
            "boss.yaml",
            &format!("{keep}  - {{email: boss@x.com, roles: [admin]}}\n"),
        );
        cli_ok(&config, &["policy", "apply", &with_boss]);

        for (method, path) in [("POST", "/api/v1/roles"), ("GET", "/api/v1/roles")] {
            let (code, out, _) = cli(&config, &["check", "--token", token, method, path]);
            assert_eq!(code, 1, "{mode}: {method} {path}: {out}");
            assert!(out.contains("deny 401 invalid_token"), "{mode}: {out}");
        }
        // The new user's own token works: refusing the old id did not refuse the new one.
        let boss = cli_ok(
            &config,
            &["jwt", "mint", "--user", "boss@x.com", "--ttl", "5m"],
        );
        let (code, out, _) = cli(
            &config,
            &["check", "--token", boss.trim(), "POST", "/api/v1/roles"],
        );
        assert_eq!(code, 0, "{mode}: {out}");
    }
}

/// Issue 8, hole 9: keys without an issuer or audience accept any token those keys signed,
/// for any service; `config check` warns, and `--strict` refuses.
#[test]
fn config_check_warns_without_issuer_or_audience_and_strict_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "");
    let (code, _, err) = cli(&good, &["config", "check", "--strict"]);
    assert_eq!(code, 0, "issuer and audience set: {err}");
    assert!(!err.contains("warning"), "{err}");

    let text = std::fs::read_to_string(&good).unwrap();
    let open: String = text
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("issuer:") && !l.trim_start().starts_with("audience:")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.path().join("open.yaml");
    std::fs::write(&path, open).unwrap();
    let (code, out, err) = cli(&path, &["config", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: jwt: neither issuer nor audience"),
        "{err}"
    );
    let (code, _, err) = cli(&path, &["config", "check", "--strict"]);
    assert_eq!(code, 64, "{err}");
}

/// Issue 8, hole 3: a token from an outside identity provider (its own `sub`, a verified
/// `email`) is matched to the stored user by email when `jwt.subject_claim: email`, so
/// `jwt revoke --user EMAIL` refuses it.
#[test]
fn revoking_a_user_by_email_refuses_an_outside_providers_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let config = support::write_config_for(dir.path(), &url, "200ms", "token", "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "  permissions_from: token\n",
        "  permissions_from: token\n  subject_claim: email\n",
    );
    std::fs::write(&config, text).unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
         users:\n  - {email: nobody@example.com, roles: [viewer]}\n",
    )
    .unwrap();
    cli_ok(&config, &["policy", "apply", policy.to_str().unwrap()]);
    let now = support::unix_now();
    let sign = |claims: serde_json::Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("test-hs256".to_owned());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(support::SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let claims = |verified: bool| {
        serde_json::json!({
            "sub": "u-nob", "email": "nobody@example.com", "email_verified": verified,
            "roles": ["viewer"], "iss": "portcullis-test", "aud": "portcullis",
            "iat": now - 5, "exp": now + 300,
        })
    };
    let token = sign(claims(true));
    let (code, out, _) = cli(&config, &["check", "--token", &token, "GET", "/r"]);
    assert_eq!(code, 0, "matched by its verified email: {out}");
    let unverified = sign(claims(false));
    let (code, out, _) = cli(&config, &["check", "--token", &unverified, "GET", "/r"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not verified"), "{out}");

    cli_ok(&config, &["jwt", "revoke", "--user", "nobody@example.com"]);
    let (code, out, _) = cli(&config, &["check", "--token", &token, "GET", "/r"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deny 401 invalid_token"), "{out}");
}

/// `jwt revoke JTI --expires-at EXP`: the revocation is enforced while the token lives; an
/// expiry already long past is kept by nobody; a malformed one is refused, changing nothing.
#[test]
fn a_jwt_revocation_with_its_expiry_is_enforced_then_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (config, token) = example_with_token(dir.path());
    let token = token.as_str();
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    let jti = claims["jti"].as_str().unwrap();
    let exp = claims["exp"].as_i64().unwrap().to_string();
    let check = ["check", "--token", token, "GET", "/api/v1/roles"];
    assert_eq!(cli(&config, &check).0, 0);

    let (code, _, err) = cli(&config, &["jwt", "revoke", jti, "--expires-at", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("neither unix seconds nor an RFC 3339"),
        "{err}"
    );
    assert_eq!(
        cli(&config, &check).0,
        0,
        "a refused revocation changes nothing"
    );

    cli_ok(&config, &["jwt", "revoke", jti, "--expires-at", &exp]);
    let (code, out, _) = cli(&config, &check);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deny 401"), "{out}");

    // An id whose token expired long ago (RFC 3339 form) is not kept, and the command says
    // so rather than claim a revocation.
    let out = cli_ok(
        &config,
        &[
            "jwt",
            "revoke",
            "old-id",
            "--expires-at",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert!(
        out.starts_with("not stored: jti old-id expired at 2020-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(!out.contains("revoked jti"), "{out}");
    let (code, _, err) = cli(
        &config,
        &["jwt", "revoke", "--user", "a@b", "--expires-at", "1"],
    );
    assert_eq!(code, 2, "--expires-at belongs to a jti: {err}");
}

/// CLI rough edges: an unknown owner, an unknown permission (exit 66, not found) and a disabled
/// service account (exit 70, refused) are said as such, told apart from a deny's 1, and change
/// nothing.
#[test]
fn token_commands_name_what_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = example_with_token(dir.path());
    let (code, _, err) = cli(&config, &["token", "list", "--owner", "ghost@example.com"]);
    assert_eq!(code, 66, "{err}");
    assert!(
        err.contains("no user or service account \"ghost@example.com\""),
        "{err}"
    );
    let (code, _, err) = cli(
        &config,
        &[
            "token",
            "issue",
            "--user",
            "ada@example.com",
            "--permissions",
            "roles:fly",
        ],
    );
    assert_eq!(code, 66, "{err}");
    assert!(err.contains("no permission \"roles:fly\" exists"), "{err}");
    let disabled = dir.path().join("disabled.yaml");
    std::fs::write(
        &disabled,
        "service_accounts:\n  - {name: old-bot, disabled: true, roles: [viewer]}\n",
    )
    .unwrap();
    cli_ok(&config, &["policy", "apply", disabled.to_str().unwrap()]);
    let (code, out, err) = cli(&config, &["token", "issue", "--service-account", "old-bot"]);
    assert_eq!(code, 70, "{err}");
    assert!(out.is_empty(), "no token printed: {out}");
    assert!(err.contains("service account old-bot is disabled"), "{err}");
    let listed = cli_ok(&config, &["token", "list"]);
    assert_eq!(listed.lines().count(), 1, "only the header: {listed}");
}

/// `check --permissions` decides for the permissions named, whatever `jwt.permissions_from`
/// says: in `store` mode too (the caller is assumed, not a stored user).
#[test]
fn check_with_permissions_works_in_store_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let config = support::write_config_for(dir.path(), &url, "200ms", "store", "");
    cli_ok(&config, &["policy", "apply", &example()]);
    let (code, out, _) = cli(
        &config,
        &[
            "check",
            "--permissions",
            "roles:read",
            "GET",
            "/api/v1/roles",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#"permission "roles:read" grants"#), "{out}");
    let (code, out, _) = cli(
        &config,
        &[
            "check",
            "--permissions",
            "roles:read",
            "POST",
            "/api/v1/roles",
        ],
    );
    assert_eq!(code, 1, "{out}");
}

#[test]
fn policy_diff_compares_two_files_offline_and_exits_by_difference() {
    let dir = tempfile::tempdir().unwrap();
    // No database is opened: the config names one that does not exist.
    let config = write_config(dir.path(), "");
    let changed = dir.path().join("changed.yaml");
    let text = std::fs::read_to_string(example()).unwrap();
    std::fs::write(&changed, text.replace("viewer: [roles:read]", "viewer: []")).unwrap();
    let changed = changed.to_str().unwrap();
    let (code, out, err) = cli(&config, &["policy", "diff", &example(), changed]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(out.trim(), "~ role viewer: -permission roles:read", "{out}");
    let (code, out, _) = cli(&config, &["policy", "diff", &example(), &example()]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = cli(&config, &["policy", "diff", &example(), "/no/such.yaml"]);
    assert_eq!(code, 65, "{err}");
    assert!(
        !dir.path().join("portcullis.db").exists(),
        "diff opened the database"
    );
}

/// A config with a login section whose state secret is `state` and whose
/// `login.redirects` holds `redirects` (besides `default`); `config check`'s answer.
#[allow(clippy::unwrap_used)]
fn login_config_check(
    dir: &std::path::Path,
    state: &str,
    redirects: &str,
    args: &[&str],
) -> (i32, String, String) {
    let key = |name: &str| {
        root()
            .join("tests/data/keys")
            .join(name)
            .display()
            .to_string()
    };
    std::fs::write(dir.join("client-secret"), "client-secret\n").unwrap();
    std::fs::write(dir.join("state-secret"), state).unwrap();
    let text = format!(
        "server: {{listen: 127.0.0.1:0, http_listen: 127.0.0.1:0}}\n\
         database: {{url: 'sqlite://{db}'}}\n\
         login:\n  public_url: https://auth.example.com\n\
         \x20 provider: {{client_id: web, client_secret_file: {dir}/client-secret}}\n\
         \x20 accounts: {{email_domains: [example.com]}}\n\
         \x20 token: {{issuer: 'https://auth.example.com', audience: apps}}\n\
         \x20 signing_keys: [{{public_key_file: {pub1}, private_key_file: {key1}}}]\n\
         \x20 redirects: {{{redirects}, default: 'https://app.example.com/'}}\n\
         \x20 state_secret_file: {dir}/state-secret\n",
        db = dir.join("p.db").display(),
        dir = dir.display(),
        pub1 = key("es256.pub.pem"),
        key1 = key("es256.key.pem"),
    );
    let path = dir.join("login.yaml");
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    cli(&path, &all)
}

const GOOD_STATE_SECRET: &str = "state-secret-0123456789abcdef-0123456789abcdef\n";
const APPS: &str = "origins: ['https://app.example.com']";

/// Issue 21, item 8: a login state secret shorter than 32 bytes is a configuration error
/// (exit 64, one line), not a store or I/O failure (70); a long enough one passes.
#[test]
fn a_short_login_state_secret_is_a_config_error_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = login_config_check(dir.path(), "too-short-secret\n", APPS, &[]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("state secret has 16 bytes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("too-short-secret"),
        "the secret is never printed: {err}"
    );
    let (code, out, err) = login_config_check(dir.path(), GOOD_STATE_SECRET, APPS, &["--strict"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Issue 21, item 3: a bare parent domain in the redirect allow-list trusts every sibling
/// host: `config check` warns, and `--strict` refuses; apps listed one by one do not warn.
#[test]
fn config_check_warns_when_a_parent_domain_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let parent = "domains: [example.com]";
    let (code, out, err) = login_config_check(dir.path(), GOOD_STATE_SECRET, parent, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: login.redirects.domains: example.com trusts every host under it"),
        "{err}"
    );
    let (code, _, err) = login_config_check(dir.path(), GOOD_STATE_SECRET, parent, &["--strict"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = login_config_check(dir.path(), GOOD_STATE_SECRET, APPS, &["--strict"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// The README's exit-code table is the single truth: every row's code is what a command with
/// that meaning exits with, and the CLI has no code the table does not list.
#[test]
fn every_exit_code_in_the_readme_table_is_what_commands_exit_with() {
    use portcullis::cli::exit;
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("| code | meaning |")
        .expect("the exit-code table");
    let documented: std::collections::BTreeSet<u8> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(1).unwrap().trim().parse().unwrap())
        .collect();
    let known: std::collections::BTreeSet<u8> = [
        exit::OK,
        exit::DENY,
        exit::NOT_SERVING,
        exit::CHANGED,
        exit::USAGE,
        exit::CONFIG,
        exit::DATA,
        exit::NOT_FOUND,
        exit::FAILURE,
    ]
    .into_iter()
    .collect();
    assert_eq!(documented, known, "the README table and the CLI's codes");

    let dir = tempfile::tempdir().unwrap();
    let (config, token) = example_with_token(dir.path());
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let bad_config = std::path::PathBuf::from(file("bad-config.yaml", "colour: blue\n"));
    let bad_policy = file("bad.yaml", "roles:\n  admin: [nope]\n");
    let disabled = file(
        "disabled.yaml",
        "service_accounts:\n  - {name: old-bot, disabled: true, roles: [viewer]}\n",
    );
    cli_ok(&config, &["policy", "apply", &disabled]);
    let log = file("decisions.log", "");
    fn other<'a>(text: &'a str, config: &std::path::Path) -> (&'a str, std::path::PathBuf) {
        (text, config.to_path_buf())
    }
    let cases: Vec<(u8, (&str, std::path::PathBuf), Vec<&str>)> = vec![
        (
            0,
            other("allowed", &config),
            vec!["check", "--token", &token, "GET", "/api/v1/roles"],
        ),
        (
            1,
            other("denied", &config),
            vec!["check", "GET", "/api/v1/roles"],
        ),
        (
            2,
            other("bad argument", &config),
            vec!["jwt", "revoke", "x", "--expires-at", "soon"],
        ),
        (
            2,
            other("neither id nor user", &config),
            vec!["session", "revoke"],
        ),
        (64, ("bad config", bad_config), vec!["config", "check"]),
        (
            65,
            other("bad policy file", &config),
            vec!["policy", "apply", &bad_policy],
        ),
        (
            66,
            other("unknown decision id", &config),
            vec!["why", "no-such-id", "--log", &log],
        ),
        (
            66,
            other("no such log", &config),
            vec!["why", "x", "--log", "/nonexistent/decisions.log"],
        ),
        (
            66,
            other("no candidate to promote", &config),
            vec!["policy", "promote"],
        ),
        (
            66,
            other("no candidate to discard", &config),
            vec!["policy", "discard"],
        ),
        (
            66,
            other("no candidate to replay", &config),
            vec!["replay", &log],
        ),
        (
            66,
            other("unknown token", &config),
            vec!["token", "revoke", "tok_0000000000000000"],
        ),
        (
            66,
            other("unknown user", &config),
            vec!["jwt", "mint", "--user", "nobody@example.com"],
        ),
        (
            66,
            other("unknown session", &config),
            vec!["session", "revoke", "no-such-session"],
        ),
        (
            70,
            other("refused", &config),
            vec!["token", "issue", "--service-account", "old-bot"],
        ),
    ];
    let mut exercised = std::collections::BTreeSet::new();
    for (code, (what, config), args) in &cases {
        let (got, out, err) = cli(config, args);
        assert_eq!(got, i32::from(*code), "{what}: {args:?}: {out}{err}");
        exercised.insert(*code);
    }
    assert_eq!(
        exercised, documented,
        "a command for every row of the table"
    );
}
