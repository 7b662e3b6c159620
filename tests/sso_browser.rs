//! Single sign-on across subdomains in a real browser: headless Chromium (Debian's `chromium`,
//! driven over the DevTools protocol), the shipped TLS Envoy (`envoy/envoy-tls.yaml`) with a
//! certificate from a test CA made here, portcullis with its login issuer, and the real
//! `oidc-provider` standing in for Google. Two app hosts share the `jwt-token` cookie on
//! `portcullis.test`; Envoy listens on a port that is not 443, which every allow-list entry
//! names (`host:port`). Signing out ends the provider's session too. A screenshot of each
//! step goes to `target/sso-browser/`.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::network::CookieSameSite;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use serde_json::Value;
use support::sso::{chromium_args, SsoStack, CHROMIUM};

const TOKEN_LIFETIME_S: i64 = 60;
const RENEW_BEFORE_S: i64 = 50;
/// How long any one step may take before the test gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

/// What the page shows now: its URL and text.
async fn now_showing(page: &Page) -> (String, String) {
    let url = page.url().await.ok().flatten().unwrap_or_default();
    let text = page
        .evaluate("document.body ? document.body.innerText : ''")
        .await
        .ok()
        .and_then(|v| v.into_value::<String>().ok())
        .unwrap_or_default();
    (url, text)
}

/// Polls until the page's URL and text satisfy `done`; panics with what it shows otherwise.
async fn until(page: &Page, what: &str, done: impl Fn(&str, &str) -> bool) -> (String, String) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let (url, text) = now_showing(page).await;
        if done(&url, &text) {
            return (url, text);
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}: at {url}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(page: &Page, script: &str) {
    page.evaluate(script)
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
}

async fn screenshot(page: &Page, dir: &Path, name: &str) {
    let _ = page
        .save_screenshot(
            ScreenshotParams::builder().full_page(true).build(),
            dir.join(format!("{name}.png")),
        )
        .await;
}

/// The `jwt-token` cookie the browser holds for the page's URL, if any.
async fn jwt_cookie(page: &Page) -> Option<chromiumoxide::cdp::browser_protocol::network::Cookie> {
    page.get_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "jwt-token")
}

/// Polls until the page is the provider's sign-in form (a session there would pass straight
/// through to the app instead); returns the provider URL, which carries the login request.
async fn until_provider_login(
    page: &Page,
    provider: &support::oidc::OidcProvider,
    what: &str,
) -> (String, String) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let (url, text) = now_showing(page).await;
        let form = page
            .evaluate("!!document.querySelector('input[name=login]')")
            .await
            .ok()
            .and_then(|v| v.into_value::<bool>().ok())
            .unwrap_or(false);
        if url.starts_with(&provider.issuer) && form {
            return (url, text);
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what} (the provider's sign-in form): at {url}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs in at the provider's login and consent forms (the browser is on its login page).
async fn sign_in(page: &Page, provider: &str, account: &str, done: &str) {
    for _ in 0..4 {
        let (url, before) = now_showing(page).await;
        if url.starts_with(done) {
            return;
        }
        assert!(url.starts_with(provider), "expected the provider, at {url}");
        js(
            page,
            &format!(
                "(() => {{ const l = document.querySelector('input[name=login]'); \
                 if (l) {{ l.value = '{account}'; \
                 const p = document.querySelector('input[name=password]'); if (p) p.value = 'any'; }} \
                 document.forms[0].submit(); return true; }})()"
            ),
        )
        .await;
        until(page, "the next page after a provider form", |u, t| {
            !t.is_empty() && (u != url || t != before)
        })
        .await;
        // The provider's pages can redirect more than once: let it settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (url, text) = now_showing(page).await;
    assert!(
        url.starts_with(done),
        "sign-in did not finish: {url}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_across_subdomains_in_a_real_browser() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Debian's chromium: run `make test`, which installs it"
    );
    let shots: PathBuf = support::root().join("target/sso-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let stack = SsoStack::start(TOKEN_LIFETIME_S, RENEW_BEFORE_S).await;
    let (app1, app2) = (stack.origin("app1"), stack.origin("app2"));
    // The journey runs on Envoy's TLS listener on a port that is not 443, so the allow-list
    // names it: `host:port` entries in login.redirects.domains, the apps one by one.
    assert_ne!(stack.envoy_port, 443);
    let config = std::fs::read_to_string(stack.dir.path().join("portcullis.yaml")).unwrap();
    let port = stack.envoy_port;
    assert!(
        config.contains(&format!(
            "domains: ['app1.portcullis.test:{port}', 'app2.portcullis.test:{port}', \
             'login.portcullis.test:{port}']"
        )),
        "{config}"
    );
    assert!(!config.contains("origins:"), "{config}");
    let provider = &stack.provider;
    let evil = stack.evil;

    let profile = tempfile::tempdir().unwrap();
    let (mut browser, mut handler) = Browser::launch(
        BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile.path())
            .args(chromium_args(&stack.spki))
            .arg("disable-gpu")
            .build()
            .unwrap(),
    )
    .await
    .expect("chromium starts");
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let page = browser.new_page("about:blank").await.unwrap();

    // 1. app1, anonymous: the browser lands on the provider's login page.
    page.goto(format!("{app1}/")).await.unwrap();
    let (_, text) = until(&page, "the provider's login page", |u, t| {
        u.starts_with(&provider.issuer) && !t.is_empty()
    })
    .await;
    screenshot(&page, &shots, "1-provider-login").await;
    assert!(
        page.evaluate("!!document.querySelector('input[name=login]')")
            .await
            .unwrap()
            .into_value::<bool>()
            .unwrap(),
        "a login form: {text}"
    );

    // 2. Sign in: back on app1, rendered from the identity headers.
    sign_in(&page, &provider.issuer, "ada", &app1).await;
    let (url, text) = until(&page, "app1 signed in", |u, t| {
        u.starts_with(&app1) && t.contains("signed in as")
    })
    .await;
    screenshot(&page, &shots, "2-app1-signed-in").await;
    assert_eq!(url, format!("{app1}/"));
    assert!(
        text.contains("app1: signed in as ada@example.com"),
        "{text}"
    );
    assert!(text.contains("roles: viewer"), "{text}");

    // 3. The cookie, as the browser keeps it.
    let cookie = jwt_cookie(&page).await.expect("the jwt-token cookie");
    assert_eq!(cookie.domain, ".portcullis.test");
    assert_eq!(cookie.path, "/");
    assert!(cookie.secure, "Secure");
    assert!(cookie.http_only, "HttpOnly");
    assert_eq!(cookie.same_site, Some(CookieSameSite::Lax));
    assert!(!cookie.session, "Max-Age makes it persistent");
    let first = claims(&cookie.value);
    // Max-Age is the token's lifetime: the cookie expires with the token.
    let exp = first["exp"].as_f64().unwrap();
    assert!(
        (cookie.expires - exp).abs() <= 2.0,
        "{} vs {exp}",
        cookie.expires
    );
    assert_eq!(
        first["exp"].as_i64().unwrap() - first["iat"].as_i64().unwrap(),
        TOKEN_LIFETIME_S
    );
    screenshot(&page, &shots, "3-cookie").await;

    // 4. app2: signed in at once, no login.
    page.goto(format!("{app2}/")).await.unwrap();
    let (url, text) = until(&page, "app2", |u, t| u.starts_with(&app2) && !t.is_empty()).await;
    screenshot(&page, &shots, "4-app2-signed-in").await;
    assert_eq!(url, format!("{app2}/"));
    assert!(
        text.contains("app2: signed in as ada@example.com"),
        "{text}"
    );

    // 5. CSRF. From evil.test, another site: SameSite=Lax keeps the cookie home, so the POST
    // arrives anonymous and is refused.
    page.goto(format!("http://evil.test:{}/", evil.port()))
        .await
        .unwrap();
    until(&page, "evil.test", |_, t| t.contains("evil.test")).await;
    js(&page, "document.getElementById('attack').submit()").await;
    let (_, text) = until(&page, "the cross-site POST's answer", |u, t| {
        u.starts_with(&format!("{app1}/notes")) && t.contains("reason")
    })
    .await;
    screenshot(&page, &shots, "5a-cross-site-post").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["reason"], "missing_credential", "{text}");
    // From a sibling host off the allow-list: same site, so the cookie rides along, and the
    // Origin check refuses it: 403 csrf.
    let sibling = stack.origin("evil");
    page.goto(format!("{sibling}/")).await.unwrap();
    until(&page, "the evil sibling", |_, t| t.contains("evil sibling")).await;
    js(&page, "document.getElementById('attack').submit()").await;
    let (_, text) = until(&page, "the sibling's POST answer", |u, t| {
        u.starts_with(&format!("{app1}/notes")) && t.contains("reason")
    })
    .await;
    screenshot(&page, &shots, "5b-csrf").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["reason"], "csrf", "{text}");
    assert_eq!(body["error"], "forbidden", "{text}");
    // The same POST from app1's own page succeeds.
    page.goto(format!("{app1}/")).await.unwrap();
    until(&page, "app1", |_, t| t.contains("app1: signed in")).await;
    js(&page, "document.getElementById('note').submit()").await;
    let (url, text) = until(&page, "the note saved", |_, t| t.contains("saved")).await;
    screenshot(&page, &shots, "5c-own-post").await;
    assert_eq!(url, format!("{app1}/notes"));
    assert_eq!(text.trim(), "app1: saved");

    // 6. The JWT nears its end: the next navigation renews it, without a login.
    let before = jwt_cookie(&page).await.expect("cookie");
    let old = claims(&before.value);
    let renew_from = old["exp"].as_i64().unwrap() - RENEW_BEFORE_S + 1;
    let wait = renew_from - support::unix_now() as i64;
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    page.goto(format!("{app1}/")).await.unwrap();
    let (url, text) = until(&page, "app1 after renewal", |u, t| {
        u.starts_with(&app1) && !t.is_empty()
    })
    .await;
    screenshot(&page, &shots, "6-renewed").await;
    assert_eq!(url, format!("{app1}/"), "{text}");
    assert!(
        text.contains("app1: signed in as ada@example.com"),
        "{text}"
    );
    let after = jwt_cookie(&page).await.expect("cookie");
    let new = claims(&after.value);
    assert_ne!(new["jti"], old["jti"], "a new token");
    assert_eq!(new["sid"], old["sid"], "the same session");
    assert!(new["exp"].as_i64().unwrap() > old["exp"].as_i64().unwrap());

    // 7. Sign out on app2. The provider advertises an end_session_endpoint: portcullis sends
    // the browser there (its confirmation answers itself), the provider ends its own session
    // and sends the browser back to portcullis, which lands it on app2. Nothing is cleared by
    // hand: the provider's session cookies are as the sign-in left them, so a session that
    // lived on would sign the browser straight back in.
    page.goto(format!("{app2}/")).await.unwrap();
    until(&page, "app2", |_, t| t.contains("app2: signed in")).await;
    js(&page, "document.getElementById('logout').submit()").await;
    until_provider_login(&page, provider, "the provider after sign-out").await;
    screenshot(&page, &shots, "7-signed-out-app2").await;
    assert!(jwt_cookie(&page).await.is_none(), "the cookie is cleared");
    // 8. app1 too shows the provider's sign-in page, not a session.
    page.goto(format!("{app1}/")).await.unwrap();
    let (url, _) = until_provider_login(&page, provider, "the provider from app1").await;
    screenshot(&page, &shots, "8-signed-out-app1").await;
    assert!(url.starts_with(&provider.issuer));
    let (_, text) = now_showing(&page).await;
    assert!(!text.contains("signed in as"), "{text}");
    // 9. Signing in there is a new sign-in at the provider, and it lands on app1.
    sign_in(&page, &provider.issuer, "ada", &app1).await;
    let (url, _) = until(&page, "app1 signed in again", |u, t| {
        u.starts_with(&app1) && t.contains("signed in as")
    })
    .await;
    screenshot(&page, &shots, "9-app1-signed-in-again").await;
    assert_eq!(url, format!("{app1}/"));
    let again = claims(&jwt_cookie(&page).await.expect("cookie").value);
    assert_ne!(again["sid"], first["sid"], "a new session");

    browser.close().await.ok();
    events.abort();
    stack.server.stop().await;
}
