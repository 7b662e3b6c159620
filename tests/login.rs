//! Sign in with Google, against a real OpenID provider (npm's `oidc-provider`, Google-shaped
//! claims) driven at the HTTP level: the code flow through the provider's own login and consent
//! forms, the minted JWT accepted by Check, the refusals (state, nonce, replayed codes, account
//! rules, disabled users, open redirects), the token endpoint (handoff codes, token exchange,
//! refresh rotation and reuse), logout reaching a second sidecar on PostgreSQL, sign-out ending
//! the provider's session (or making the next sign-in ask), and the
//! provider's key rotation and unknown-kid flood.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use envoy_types::ext_authz::v3::pb::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::oidc::{
    cookie_value, query_param, with_param, Browser, LoginSetup, LoginStack, OidcProvider,
};

const APP: &str = "https://app.example.com/dashboard?tab=1";
const PARTNER: &str = "https://partner.example.net/cb";

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

fn header(jwt: &str) -> Value {
    let h = jwt.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json")
}

fn unix_now() -> i64 {
    support::unix_now() as i64
}

/// Signs in as `account` through the browser flow and returns the callback's answer.
async fn browser_login(
    stack: &LoginStack,
    browser: &Browser,
    account: &str,
    target: &str,
) -> support::oidc::Page {
    let callback = browser
        .sign_in_until_callback(&stack.login_url(target), account)
        .await;
    browser.get(&callback).await
}

/// The JWT a successful browser login set as the `jwt-token` cookie.
async fn login_jwt(stack: &LoginStack, account: &str) -> String {
    let page = browser_login(stack, &Browser::new(), account, APP).await;
    assert_eq!(page.status, 302, "{}", page.body);
    cookie_value(&page.set_cookies, "jwt-token")
        .expect("jwt cookie")
        .to_owned()
}

async fn check(stack_grpc: std::net::SocketAddr, headers: &[(&str, &str)]) -> CheckResponse {
    let mut client = AuthorizationClient::connect(format!("http://{stack_grpc}"))
        .await
        .expect("grpc");
    client
        .check(support::check_request(
            "GET",
            "app.example.com",
            "/r",
            headers,
        ))
        .await
        .expect("check answers")
        .into_inner()
}

fn ok_headers(res: &CheckResponse) -> Option<HashMap<String, String>> {
    match &res.http_response {
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

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token(stack: &LoginStack, form: &[(&str, &str)]) -> (u16, Value) {
    post_form(&format!("{}/auth/token", stack.server.http), form).await
}

/// `/auth/token` exchanging a provider ID token (RFC 8693), as a mobile app does.
async fn exchange_id_token(stack: &LoginStack, id_token: &str) -> (u16, Value) {
    token(
        stack,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN),
        ],
    )
    .await
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A mobile app's own code flow at the provider (public client, PKCE): its ID and access token.
async fn app_tokens(provider: &OidcProvider, client_id: &str, account: &str) -> (String, String) {
    let browser = Browser::new();
    let verifier = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = format!(
        "http://127.0.0.1/{}-callback",
        if client_id == "android" {
            "android"
        } else {
            "other"
        }
    );
    let mut url = reqwest::Url::parse(&format!("{}/auth", provider.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile")
        .append_pair("redirect_uri", &redirect)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "app-state")
        .append_pair("nonce", "app-nonce");
    let back = browser
        .sign_in_until(url.as_str(), account, "-callback")
        .await;
    let code = query_param(&back, "code").expect("code");
    let (status, body) = post_form(
        &format!("{}/token", provider.issuer),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["id_token"].as_str().expect("id_token").to_owned(),
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
    )
}

fn google_shaped(provider: &OidcProvider, aud: &str, exp: i64, iss: Option<&str>) -> Value {
    json!({
        "iss": iss.unwrap_or(&provider.issuer),
        "sub": "ada",
        "aud": aud,
        "azp": aud,
        "iat": unix_now() - 10,
        "exp": exp,
        "email": "ada@example.com",
        "email_verified": true,
        "hd": "example.com",
        "name": "Ada Lovelace",
    })
}

#[tokio::test]
async fn happy_path_sets_the_parent_domain_cookie_and_check_accepts_the_token() {
    let stack = LoginStack::start("").await;
    let page = browser_login(&stack, &Browser::new(), "ada", APP).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some(APP));
    let set = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("jwt-token="))
        .expect("jwt cookie set");
    for attribute in [
        "Domain=example.com",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(
            set.split("; ").any(|a| a == attribute),
            "{attribute} in {set}"
        );
    }
    let jwt = cookie_value(&page.set_cookies, "jwt-token")
        .unwrap()
        .to_owned();
    let c = claims(&jwt);
    assert_eq!(c["iss"], "https://auth.example.com");
    assert_eq!(c["aud"], "apps");
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(c["name"], "Ada Lovelace");
    assert_eq!(c["roles"], json!(["viewer"]));
    assert_eq!(c["permissions"], json!(["read"]));
    for claim in ["sub", "iat", "exp", "jti", "sid"] {
        assert!(!c[claim].is_null(), "{claim} in {c}");
    }
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);

    // The published keys verify it, and the kid is the key's RFC 7638 thumbprint.
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", stack.server.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header(&jwt)["kid"]);
    assert_eq!(header(&jwt)["alg"], "ES256");
    let keys = portcullis::identity::jwk::parse_jwks(&jwks.to_string()).expect("jwks");
    let set = portcullis::identity::KeySet::new(keys, None).unwrap();
    assert!(set.verify_signature(&jwt).is_ok());
    let meta: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        stack.server.http
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(meta["issuer"], "https://auth.example.com");
    assert_eq!(
        meta["jwks_uri"],
        format!("{}/.well-known/jwks.json", stack.setup.public_url())
    );

    // Check accepts it as a Bearer token and as the cookie, with the identity headers.
    let bearer = format!("Bearer {jwt}");
    let cookie = format!("jwt-token={jwt}");
    for headers in [
        [("authorization", bearer.as_str())],
        [("cookie", cookie.as_str())],
    ] {
        let res = check(stack.server.grpc, &headers).await;
        let h = ok_headers(&res).unwrap_or_else(|| panic!("allowed: {res:?}"));
        assert_eq!(h["x-auth-user-id"], c["sub"].as_str().unwrap());
        assert_eq!(h["x-auth-email"], "ada@example.com");
        assert_eq!(h["x-auth-name"], "Ada Lovelace");
        assert_eq!(h["x-auth-roles"], "viewer");
        assert_eq!(h["x-auth-token-id"], c["jti"].as_str().unwrap());
        assert!(h["x-auth-permissions"].split(',').any(|p| p == "read"));
    }

    // userinfo: the caller's claims and current permissions.
    let info: Value = reqwest::Client::new()
        .get(format!("{}/auth/userinfo", stack.server.http))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "ada@example.com");
    assert_eq!(info["permissions"], json!(["read"]));
    assert_eq!(info["sid"], c["sid"]);
    stack.server.stop().await;
}

#[tokio::test]
async fn first_login_creates_the_user_with_default_roles_and_the_second_finds_it() {
    let stack = LoginStack::start("").await;
    let store = portcullis::app::open_store(&stack.config).await.unwrap();
    use portcullis::store::{LoginStore as _, PolicyStore as _};
    assert!(store
        .find_user("grace@example.com")
        .await
        .unwrap()
        .is_none());
    let first = claims(&login_jwt(&stack, "grace").await);
    let user = store
        .find_user("grace@example.com")
        .await
        .unwrap()
        .expect("created at first sign-in");
    assert_eq!(user.roles, vec!["viewer".to_owned()]);
    assert_eq!(first["sub"], user.id.to_string());
    let second = claims(&login_jwt(&stack, "grace").await);
    assert_eq!(second["sub"], first["sub"], "the same user");
    assert_ne!(second["sid"], first["sid"], "a new session");
    let sessions = store
        .list_sessions(Some("grace@example.com"))
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2);
    // Issue 21, item 6: the provider changes grace's verified email; the next sign-in stores
    // it and the token carries it.
    let mut changed = support::oidc::accounts();
    changed["grace"]["email"] = "grace.hopper@example.com".into();
    stack
        .provider
        .configure(
            support::oidc::clients(&stack.setup.public_url()),
            changed.clone(),
        )
        .await;
    let third = claims(&login_jwt(&stack, "grace").await);
    assert_eq!(third["sub"], first["sub"], "the same user");
    assert_eq!(third["email"], "grace.hopper@example.com");
    let user = store
        .find_user("grace.hopper@example.com")
        .await
        .unwrap()
        .expect("the stored user follows the provider");
    assert_eq!(user.id.to_string(), first["sub"].as_str().unwrap());
    // An email that another user has is refused with a page that says why.
    login_jwt(&stack, "ada").await;
    changed["grace"]["email"] = "ada@example.com".into();
    stack
        .provider
        .configure(support::oidc::clients(&stack.setup.public_url()), changed)
        .await;
    let page = browser_login(&stack, &Browser::new(), "grace", APP).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains("belongs to another user"),
        "{}",
        page.body
    );
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());
    assert!(store
        .find_user("grace.hopper@example.com")
        .await
        .unwrap()
        .is_some());
    store.close().await;
    stack.server.stop().await;
}

#[tokio::test]
async fn state_nonce_and_replayed_codes_are_refused() {
    let stack = LoginStack::start("").await;
    // State mismatch: the callback's state is not the one this browser's login started.
    let browser = Browser::new();
    let callback = browser
        .sign_in_until_callback(&stack.login_url(APP), "ada")
        .await;
    let forged = with_param(&callback, "state", "forged-state");
    let page = browser.get(&forged).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());
    assert!(page.location.is_none());

    // Nonce mismatch: the provider is asked (by a tampered authorize URL) for another nonce.
    let browser = Browser::new();
    let start = browser.get(&stack.login_url(APP)).await;
    assert_eq!(start.status, 302);
    let authorize = with_param(
        start.location.as_deref().unwrap(),
        "nonce",
        "injected-nonce",
    );
    let callback = browser.sign_in_until_callback(&authorize, "ada").await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("could not be verified"), "{}", page.body);
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());

    // Mix-up: the answer names another issuer (RFC 9207).
    let browser = Browser::new();
    let callback = browser
        .sign_in_until_callback(&stack.login_url(APP), "ada")
        .await;
    assert!(
        query_param(&callback, "iss").is_some(),
        "the provider sends iss"
    );
    let page = browser
        .get(&with_param(&callback, "iss", "https://evil.example"))
        .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());

    // PKCE: a code issued for another challenge cannot be redeemed with this verifier.
    let browser = Browser::new();
    let start = browser.get(&stack.login_url(APP)).await;
    let authorize = with_param(
        start.location.as_deref().unwrap(),
        "code_challenge",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    let callback = browser.sign_in_until_callback(&authorize, "ada").await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("refused the sign-in code"),
        "{}",
        page.body
    );

    // A replayed authorization code: used once, then presented with a fresh login's state.
    let browser = Browser::new();
    let callback = browser
        .sign_in_until_callback(&stack.login_url(APP), "ada")
        .await;
    let code = query_param(&callback, "code").unwrap();
    assert_eq!(browser.get(&callback).await.status, 302);
    let again = browser.get(&stack.login_url(APP)).await;
    let state = query_param(again.location.as_deref().unwrap(), "state").unwrap();
    let replay = with_param(&with_param(&callback, "state", &state), "code", &code);
    let page = browser.get(&replay).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("refused the sign-in code"),
        "{}",
        page.body
    );
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());
    stack.server.stop().await;
}

#[tokio::test]
async fn handoff_codes_are_single_use_bound_to_their_origin_and_never_a_jwt() {
    let stack = LoginStack::start("").await;
    let page = browser_login(&stack, &Browser::new(), "ada", PARTNER).await;
    assert_eq!(page.status, 302, "{}", page.body);
    let location = page.location.unwrap();
    assert!(
        location.starts_with("https://partner.example.net/cb?code="),
        "{location}"
    );
    assert!(!location.contains("eyJ"), "no JWT in a URL: {location}");
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_none());
    let code = query_param(&location, "code").unwrap();
    // Bad input changes nothing: a redirect_uri off the allow-list does not use the code up.
    let (status, body) = token(
        &stack,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://evil.com/cb"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(
        &stack,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", PARTNER),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].is_string());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["email"],
        "ada@example.com"
    );
    // Replayed.
    let (status, body) = token(
        &stack,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", PARTNER),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Bound to its origin: another allow-listed origin cannot redeem it.
    let page = browser_login(&stack, &Browser::new(), "ada", PARTNER).await;
    let code = query_param(page.location.as_deref().unwrap(), "code").unwrap();
    let (status, body) = token(
        &stack,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://app.example.com/"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn account_rules_and_disabled_users_get_a_page_not_a_token() {
    let stack = LoginStack::start("  accounts: {hosted_domain: example.com}\n").await;
    for (account, text) in [
        ("unverified", "not verified your email"),
        ("outsider", "not one of the organisation"),
        ("disabled", "disabled"),
    ] {
        let page = browser_login(&stack, &Browser::new(), account, APP).await;
        assert_eq!(page.status, 403, "{account}: {}", page.body);
        assert!(page.body.contains(text), "{account}: {}", page.body);
        assert!(
            cookie_value(&page.set_cookies, "jwt-token").is_none(),
            "{account}"
        );
        assert!(page.location.is_none(), "{account}");
    }
    // The same account rules apply to a token exchange.
    let id = stack
        .provider
        .sign(
            json!({"iss": stack.provider.issuer, "sub": "outsider", "aud": "android", "exp": unix_now() + 300,
                   "iat": unix_now(), "email": "mallory@other.com", "email_verified": true, "hd": "other.com"}),
            json!({}),
        )
        .await;
    let (status, body) = exchange_id_token(&stack, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn open_redirect_targets_get_400_and_never_a_redirect() {
    let stack = LoginStack::start("").await;
    let targets = [
        "//evil.com",
        "//evil.com/x",
        "/\\evil.com",
        "\\\\evil.com",
        "/relative",
        "evil.com",
        "https://example.com.evil.com/",
        "https://evil-example.com/",
        "https://evilexample.com/",
        "https://example.com@evil.com/",
        "https://user:pw@app.example.com/",
        "https://app.example.com@evil.com",
        "https://evil.com#@app.example.com",
        "https://evil.com?@app.example.com",
        "https://evil.com\\@app.example.com",
        "https:/\\evil.com",
        "https:evil.com",
        " https://app.example.com/",
        "https://app.example.com/\tx",
        "https://app.example.com%09.evil.com/",
        "https://app.example.com%0d%0a/",
        "https://app.example.com%5c.evil.com/",
        "https://app.example.com%C2%85/",
        "https://app.example.com/%zz",
        "https://app.example.com/?q=%",
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "javascript://app.example.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "HTTPS://app.example.com/",
        "http://app.example.com/",
        "ftp://app.example.com/",
        "https://app.example.com:8443/",
        "https://partner.example.net:8443/",
        "https://sub.partner.example.net/",
        "https://xn--exmple-cua.com/",
        "https://exämple.com/",
        "https://app.exаmple.com/",
        "https://app.example.com。evil.com/",
        "https://[::1]/",
        "https://0x7f.0.0.1/",
        "https://127.0.0.1/",
        "http://localhost/",
        "https://app.example.com./",
    ];
    assert!(targets.len() >= 40);
    let browser = Browser::new();
    for target in targets {
        let page = browser.get(&stack.login_url(target)).await;
        assert_eq!(page.status, 400, "{target:?}");
        assert!(page.location.is_none(), "{target:?} redirected");
        assert!(page.set_cookies.is_empty(), "{target:?} set a cookie");
    }
    // And an allowed one redirects to the provider.
    let page = browser.get(&stack.login_url(APP)).await;
    assert_eq!(page.status, 302);
    assert!(page.location.unwrap().starts_with(&stack.provider.issuer));
    logout_takes_redirect_url_from_the_query_or_the_form(&stack).await;
    // Issue 21, item 5: percent-encoded characters in the path, query and fragment belong to
    // the app: a search page sends a person to sign in and gets them back, byte for byte.
    let search = "https://app.example.com/search%20page?q=a%20b&c=%26%0A#r%C3%A9sum%C3%A9";
    let page = browser_login(&stack, &Browser::new(), "ada", search).await;
    assert_eq!(page.status, 302, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some(search));
    assert!(cookie_value(&page.set_cookies, "jwt-token").is_some());
    stack.server.stop().await;
}

/// Issue 21, item 4: `POST /auth/logout` reads `redirect_url` from the query string (where
/// `/auth/login` takes it) as well as the form body; different values in both are a 400.
async fn logout_takes_redirect_url_from_the_query_or_the_form(stack: &LoginStack) {
    let bye = "https://app.example.com/bye?from=logout";
    let logout = |query: Option<&str>, form: Option<&str>| {
        let mut url = reqwest::Url::parse(&format!("{}/auth/logout", stack.server.http)).unwrap();
        if let Some(q) = query {
            url.query_pairs_mut().append_pair("redirect_url", q);
        }
        let mut request = Browser::new().client.post(url);
        if let Some(f) = form {
            request = request.form(&[("redirect_url", f)]);
        }
        async move {
            let r = request.send().await.unwrap();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), location)
        }
    };
    assert_eq!(logout(Some(bye), None).await, (303, Some(bye.to_owned())));
    assert_eq!(logout(None, Some(bye)).await, (303, Some(bye.to_owned())));
    assert_eq!(
        logout(Some(bye), Some(bye)).await,
        (303, Some(bye.to_owned()))
    );
    assert_eq!(
        logout(None, None).await,
        (303, Some("https://app.example.com/".to_owned()))
    );
    assert_eq!(
        logout(Some(bye), Some("https://app.example.com/other")).await,
        (400, None),
        "a conflict is refused"
    );
    assert_eq!(logout(Some("https://evil.com/"), None).await, (400, None));
}

#[tokio::test]
async fn token_exchange_accepts_our_clients_tokens_only() {
    let stack = LoginStack::start("").await;
    let exchange = |subject: String, kind: &'static str| {
        let stack = &stack;
        async move {
            token(
                stack,
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &subject),
                    ("subject_token_type", kind),
                ],
            )
            .await
        }
    };
    // A real ID token and access token of the Android app, from its own code flow.
    let (id_token, access_token) = app_tokens(&stack.provider, "android", "ada").await;
    let (status, body) = exchange(id_token, ID_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["refresh_token"].is_string());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["email"],
        "ada@example.com"
    );
    let (status, body) = exchange(access_token, ACCESS_TOKEN).await;
    assert_eq!(status, 200, "{body}");

    // Another app's access token is refused (substitution).
    let (_, other_access) = app_tokens(&stack.provider, "other-app", "ada").await;
    let (status, body) = exchange(other_access, ACCESS_TOKEN).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    // ID tokens: wrong audience, expired, another issuer.
    let p = &stack.provider;
    let wrong_aud = p
        .sign(
            google_shaped(p, "other-app", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let expired = p
        .sign(
            google_shaped(p, "android", unix_now() - 3600, None),
            json!({}),
        )
        .await;
    let other_iss = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, Some("https://evil.example")),
            json!({}),
        )
        .await;
    let good = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    for (name, t) in [
        ("wrong aud", wrong_aud),
        ("expired", expired),
        ("other issuer", other_iss),
    ] {
        let (status, body) = exchange(t, ID_TOKEN).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{name}: {body}"
        );
    }
    assert_eq!(exchange(good, ID_TOKEN).await.0, 200);
    // azp: one of ours, and required when there are several audiences.
    let mut base = google_shaped(p, "android", unix_now() + 300, None);
    base["azp"] = json!("other-app");
    let foreign_azp = p.sign(base.clone(), json!({})).await;
    base["aud"] = json!(["android", "web"]);
    base.as_object_mut().unwrap().remove("azp");
    let no_azp = p.sign(base.clone(), json!({})).await;
    base["azp"] = json!("android");
    let with_azp = p.sign(base, json!({})).await;
    for (name, t) in [
        ("foreign azp", foreign_azp),
        ("several audiences, no azp", no_azp),
    ] {
        let (status, body) = exchange(t, ID_TOKEN).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{name}: {body}"
        );
    }
    assert_eq!(exchange(with_azp, ID_TOKEN).await.0, 200);

    // Bad input: RFC 6749 §5 errors, never a 500.
    let bad: [(&[(&str, &str)], &str); 6] = [
        (&[], "invalid_request"),
        (&[("grant_type", "password")], "unsupported_grant_type"),
        (&[("grant_type", EXCHANGE)], "invalid_request"),
        (
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", "x"),
                ("subject_token_type", "y"),
            ],
            "invalid_request",
        ),
        (
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", "not.a.jwt"),
                ("subject_token_type", ID_TOKEN),
            ],
            "invalid_grant",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "unknown"),
            ],
            "invalid_grant",
        ),
    ];
    for (form, error) in bad {
        let (status, body) = token(&stack, form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{form:?}: {body}"
        );
    }
    let r = reqwest::Client::new()
        .post(format!("{}/auth/token", stack.server.http))
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::Client::new()
        .post(format!("{}/auth/token", stack.server.http))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&grant_type=refresh_token&refresh_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a repeated parameter");
    stack.server.stop().await;
}

async fn is_allowed(grpc: std::net::SocketAddr, jwt: &str) -> bool {
    let bearer = format!("Bearer {jwt}");
    ok_headers(&check(grpc, &[("authorization", bearer.as_str())]).await).is_some()
}

/// Polls until Check allows `jwt` (a new user reaches the snapshot), at most ~10 s.
async fn allowed_within_reload(grpc: std::net::SocketAddr, jwt: &str) -> bool {
    for _ in 0..200 {
        if is_allowed(grpc, jwt).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Polls until Check refuses `jwt` (the reload bound), at most ~10 s.
async fn refused_within_reload(grpc: std::net::SocketAddr, jwt: &str) -> bool {
    for _ in 0..200 {
        if !is_allowed(grpc, jwt).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_session() {
    let stack = LoginStack::start("").await;
    let p = &stack.provider;
    let id = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let (status, first) = exchange_id_token(&stack, &id).await;
    assert_eq!(status, 200, "{first}");
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = token(
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    let a2 = second["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    assert_eq!(
        claims(&a2)["sid"],
        claims(first["access_token"].as_str().unwrap())["sid"]
    );
    assert!(is_allowed(stack.server.grpc, &a2).await);

    // r1 again: reuse. The whole session is revoked: r2 and its access tokens die with it.
    let (status, body) = token(
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &r1)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &r2)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(refused_within_reload(stack.server.grpc, &a2).await);
    let info = reqwest::Client::new()
        .get(format!("{}/auth/userinfo", stack.server.http))
        .bearer_auth(&a2)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401);
    stack.server.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_on_a_second_sidecar_sharing_postgres() {
    use support::pg::{shared_admin_url, PgDatabase};
    let db = PgDatabase::create(&shared_admin_url()).await;
    {
        let store = portcullis::store::SqlStore::connect(&db.url, 1)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.close().await;
    }
    let stack = LoginStack::start_on(LoginSetup::new(), &db.url, "").await;
    // A second sidecar on the same database.
    let second_setup = LoginSetup::new();
    let second_config = second_setup.config(&db.url, &stack.provider.issuer, "");
    let second = support::oidc::LoginServer::start(&second_config).await;

    let p = &stack.provider;
    let id = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let (status, body) = exchange_id_token(&stack, &id).await;
    assert_eq!(status, 200, "{body}");
    let jwt = body["access_token"].as_str().unwrap().to_owned();
    assert!(
        allowed_within_reload(second.grpc, &jwt).await,
        "the second sidecar accepts it first"
    );

    // GET does not log out.
    let r = reqwest::Client::new()
        .get(format!("{}/auth/logout", stack.server.http))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(is_allowed(second.grpc, &jwt).await);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/auth/logout", stack.server.http))
        .bearer_auth(&jwt)
        .form(&[("redirect_url", "https://app.example.com/bye")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://app.example.com/bye");
    let cleared = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["jwt-token=", "Domain=example.com", "Path=/", "Max-Age=0"] {
        assert!(
            cleared.split("; ").any(|a| a == attribute),
            "{attribute} in {cleared}"
        );
    }
    assert!(
        refused_within_reload(second.grpc, &jwt).await,
        "refused on the second sidecar"
    );
    assert!(refused_within_reload(stack.server.grpc, &jwt).await);

    // A cookie-borne logout from a foreign origin is refused (CSRF) and changes nothing.
    let fresh = {
        let id = p
            .sign(
                google_shaped(p, "android", unix_now() + 300, None),
                json!({}),
            )
            .await;
        let (_, body) = exchange_id_token(&stack, &id).await;
        body["access_token"].as_str().unwrap().to_owned()
    };
    let r = client
        .post(format!("{}/auth/logout", stack.server.http))
        .header("cookie", format!("jwt-token={fresh}"))
        .header("origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Issue 21, item 3: so is one from a sibling host under the cookie domain that is not
    // listed (the allow-list names apps one by one).
    let r = client
        .post(format!("{}/auth/logout", stack.server.http))
        .header("cookie", format!("jwt-token={fresh}"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(is_allowed(stack.server.grpc, &fresh).await);
    second.stop().await;
    stack.server.stop().await;
}

#[tokio::test]
async fn provider_key_rotation_is_picked_up() {
    let stack = LoginStack::start("").await;
    let p = &stack.provider;
    let exchange = |t: String| {
        let stack = &stack;
        async move { exchange_id_token(stack, &t).await.0 }
    };
    let old = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    assert_eq!(exchange(old.clone()).await, 200);
    let kid = p.rotate().await;
    let new = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    assert_eq!(header(&new)["kid"], kid);
    // The unknown kid triggers a refresh once the cooldown (1 s here) allows it.
    let mut accepted = false;
    for _ in 0..100 {
        if exchange(new.clone()).await == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        accepted,
        "the rotated key was never fetched: {:?}",
        exchange_id_token(&stack, &new).await
    );
    // The old key is gone from the provider's set, so is it from ours.
    assert_eq!(exchange(old).await, 400);
    stack.server.stop().await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let mut setup = LoginSetup::new();
    setup.cooldown = "1h";
    let db = setup.sqlite_url();
    let stack = LoginStack::start_on(setup, &db, "").await;
    let p = &stack.provider;
    let before = p.hits("/jwks").await;
    let mut flood = Vec::new();
    for i in 0..60 {
        let kid = format!("random-kid-{i}-{:x}", rand::random::<u64>());
        flood.push(
            p.sign(
                google_shaped(p, "android", unix_now() + 300, None),
                json!({"kid": kid}),
            )
            .await,
        );
    }
    let results = futures_join(&stack, flood).await;
    assert!(results.iter().all(|s| *s == 400), "{results:?}");
    let after = p.hits("/jwks").await;
    assert!(
        after - before <= 1,
        "{} JWKS fetches for one cooldown",
        after - before
    );
    stack.server.stop().await;
}

/// Sends every token for exchange concurrently; the statuses.
async fn futures_join(stack: &LoginStack, tokens: Vec<String>) -> Vec<u16> {
    let url = format!("{}/auth/token", stack.server.http);
    let mut tasks = Vec::new();
    for t in tokens {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post_form(
                &url,
                &[
                    ("grant_type", EXCHANGE),
                    ("subject_token", &t),
                    ("subject_token_type", ID_TOKEN),
                ],
            )
            .await
            .0
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn envoy_routes_login_endpoints_to_portcullis_without_ext_authz() {
    let stack = LoginStack::start("").await;
    let upstream = support::start_echo().await;
    let http: std::net::SocketAddr = stack
        .server
        .http
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let envoy = support::Envoy::start_with_login(stack.server.grpc, upstream, Some(http)).await;
    // No token: ext_authz would refuse these (the policy grants nothing anonymous), so an
    // answer from portcullis's login listener shows ext_authz is off on these routes.
    let jwks = envoy.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert!(jwks.json()["keys"][0]["kid"].is_string());
    let bad = envoy.get("/auth/login?redirect_url=//evil.com", &[]).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("not allowed"), "{}", bad.body);
    // Everything else is still checked: anonymous is refused, the minted cookie passes.
    assert_eq!(envoy.get("/r", &[]).await.status, 401);
    let jwt = login_jwt(&stack, "ada").await;
    let cookie = format!("jwt-token={jwt}");
    let allowed = envoy.get("/r", &[("cookie", cookie.as_str())]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(
        allowed.upstream_header("x-auth-email"),
        vec!["ada@example.com".to_owned()]
    );
    stack.server.stop().await;
}

#[tokio::test]
async fn session_cli_lists_and_revokes_sessions() {
    let stack = LoginStack::start("").await;
    let config = stack.setup.path().join("portcullis.yaml");
    let jwt = login_jwt(&stack, "ada").await;
    let sid = claims(&jwt)["sid"].as_str().unwrap().to_owned();
    let listed = support::cli_ok(&config, &["session", "list", "--user", "ada@example.com"]);
    let line = listed.lines().find(|l| l.contains(&sid)).expect("listed");
    assert!(
        line.contains("ada@example.com") && line.ends_with("live"),
        "{line}"
    );
    assert!(is_allowed(stack.server.grpc, &jwt).await);
    support::cli_ok(&config, &["session", "revoke", &sid]);
    assert!(refused_within_reload(stack.server.grpc, &jwt).await);
    let listed = support::cli_ok(&config, &["session", "list"]);
    let line = listed.lines().find(|l| l.contains(&sid)).expect("listed");
    assert!(line.ends_with("revoked (revoked by an operator)"), "{line}");

    let second = login_jwt(&stack, "ada").await;
    let third = login_jwt(&stack, "ada").await;
    let out = support::cli_ok(&config, &["session", "revoke", "--user", "ada@example.com"]);
    assert_eq!(out.trim(), "revoked 2 session(s) of ada@example.com");
    assert!(refused_within_reload(stack.server.grpc, &second).await);
    assert!(refused_within_reload(stack.server.grpc, &third).await);
    let (code, _, err) = support::cli(&config, &["session", "revoke", "no-such-session"]);
    assert_eq!(code, 66, "not found: {err}");
    let (code, _, err) = support::cli(
        &config,
        &["session", "revoke", "--user", "nobody@example.com"],
    );
    assert_eq!(code, 66, "not found: {err}");
    stack.server.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_providers_keys() {
    let setup = LoginSetup::new();
    let unreachable = format!("http://127.0.0.1:{}", support::oidc::free_port());
    let config = setup.config(&setup.sqlite_url(), &unreachable, "");
    support::oidc::apply_policy(&config).await;
    let server = support::oidc::LoginServer::start_unready(&config).await;
    let client = reqwest::Client::new();
    let mut body = String::new();
    for _ in 0..200 {
        let r = client
            .get(format!("http://{}/ready", server.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        body = r.text().await.unwrap();
        if body == "login provider or issuer keys not reached\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        body, "login provider or issuer keys not reached\n",
        "the policy loads, the provider does not"
    );
    let page = Browser::new()
        .get(&format!("{}/auth/login", server.http))
        .await;
    assert_eq!(page.status, 503);
    assert!(page.location.is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_failed_key_refresh_keeps_the_last_good_set_and_says_so() {
    let mut stack = LoginStack::start("").await;
    let p = &stack.provider;
    let good = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let stray = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({"kid": "stray"}),
        )
        .await;
    let fetches = |v: &Value| {
        v["login"]["provider_key_fetches"]
            .as_u64()
            .expect("fetches")
    };
    let before = fetches(&stack.server.status().await);
    stack.provider.kill();
    // The unknown kid makes portcullis try the (now unreachable) provider once the cooldown
    // allows; the attempt fails.
    let mut attempted = false;
    for _ in 0..100 {
        let (status, _) = exchange_id_token(&stack, &stray).await;
        assert_eq!(status, 400);
        if fetches(&stack.server.status().await) > before {
            attempted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempted, "no refresh was attempted");
    // The keys fetched before still verify.
    let (status, body) = exchange_id_token(&stack, &good).await;
    assert_eq!(status, 200, "{body}");
    // Issue 21, item 7: still ready (serving with the last good keys), and saying so.
    let ready = reqwest::get(format!("http://{}/ready", stack.server.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let status = stack.server.status().await;
    assert_eq!(
        status["login"]["provider_keys"]["refresh"], "failing",
        "{status}"
    );
    assert!(
        status["login"]["provider_keys"]["failing_since"].is_u64(),
        "{status}"
    );
    assert_eq!(
        metric(&stack, "portcullis_login_provider_keys_stale").await,
        1.0
    );
    assert!(metric(&stack, "portcullis_login_provider_key_fetch_failures_total").await >= 1.0);
    // The provider comes back (same address): the next fetch recovers.
    let port = reqwest::Url::parse(&stack.provider.issuer)
        .unwrap()
        .port()
        .unwrap();
    stack.provider = support::oidc::OidcProvider::start_at(port);
    let mut recovered = false;
    for _ in 0..100 {
        let _ = exchange_id_token(&stack, &stray).await;
        if stack.server.status().await["login"]["provider_keys"]["refresh"] == "ok" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "{}", stack.server.status().await);
    assert_eq!(
        metric(&stack, "portcullis_login_provider_keys_stale").await,
        0.0
    );
    stack.server.stop().await;
}

/// One unlabelled sample of the admin `/metrics` page.
async fn metric(stack: &LoginStack, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", stack.server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

const OUTSIDE_ISSUER: &str = "jwt:
  subject_claim: email
  permissions_from: store
  issuers:
    - issuer: {issuer}
      jwks_url: {issuer}/jwks
      audience: [android]
      jwks_cooldown: COOLDOWN
";

#[tokio::test]
async fn check_accepts_a_configured_outside_issuers_tokens_bound_to_that_issuer() {
    let stack = LoginStack::start(&OUTSIDE_ISSUER.replace("COOLDOWN", "1s")).await;
    let p = &stack.provider;
    let grpc = stack.server.grpc;
    // ada exists once she has signed in (subject_claim: email matches the stored user).
    let minted = login_jwt(&stack, "ada").await;
    assert!(
        allowed_within_reload(grpc, &minted).await,
        "portcullis's own tokens still pass"
    );
    let outside = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let bearer = format!("Bearer {outside}");
    let res = check(grpc, &[("authorization", bearer.as_str())]).await;
    let h = ok_headers(&res).unwrap_or_else(|| panic!("allowed: {res:?}"));
    assert_eq!(h["x-auth-email"], "ada@example.com");
    // Another audience, or a token of the provider's key naming another issuer: refused.
    let wrong_aud = p
        .sign(
            google_shaped(p, "other-app", unix_now() + 300, None),
            json!({}),
        )
        .await;
    assert!(!is_allowed(grpc, &wrong_aud).await);
    let claims_ours = p
        .sign(
            google_shaped(
                p,
                "apps",
                unix_now() + 300,
                Some("https://auth.example.com"),
            ),
            json!({}),
        )
        .await;
    assert!(
        !is_allowed(grpc, &claims_ours).await,
        "a key pins its issuer"
    );
    // Rotation at the provider: the unknown kid is fetched once the cooldown allows.
    p.rotate().await;
    let rotated = p
        .sign(
            google_shaped(p, "android", unix_now() + 300, None),
            json!({}),
        )
        .await;
    let mut accepted = false;
    for _ in 0..100 {
        if is_allowed(grpc, &rotated).await {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the rotated key was never fetched");
    stack.server.stop().await;
}

#[tokio::test]
async fn random_kids_at_check_fetch_an_outside_issuers_keys_at_most_once_per_cooldown() {
    let stack = LoginStack::start(&OUTSIDE_ISSUER.replace("COOLDOWN", "1h")).await;
    let p = &stack.provider;
    let before = p.hits("/jwks").await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let kid = format!("random-{i}-{:x}", rand::random::<u64>());
        let token = p
            .sign(
                google_shaped(p, "android", unix_now() + 300, None),
                json!({"kid": kid}),
            )
            .await;
        let grpc = stack.server.grpc;
        tasks.push(tokio::spawn(async move { is_allowed(grpc, &token).await }));
    }
    for t in tasks {
        assert!(!t.await.unwrap(), "an unknown kid is refused");
    }
    let after = p.hits("/jwks").await;
    assert!(
        after - before <= 1,
        "{} JWKS fetches for one cooldown",
        after - before
    );
    stack.server.stop().await;
}

/// The `Set-Cookie` values an allow adds to the browser's response.
fn set_cookies(res: &CheckResponse) -> Vec<String> {
    match &res.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .response_headers_to_add
            .iter()
            .filter_map(|h| h.header.as_ref())
            .filter(|h| h.key == "set-cookie")
            .map(|h| h.value.clone())
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn a_cookie_close_to_expiry_is_renewed_with_current_roles_while_its_session_lives() {
    // Every token is within `renew_before` of its expiry from the start.
    let stack = LoginStack::start("  renew_before: 10m\n").await;
    let jwt = login_jwt(&stack, "ada").await;
    let old = claims(&jwt);
    assert_eq!(old["roles"], json!(["viewer"]));

    // Ada becomes an admin after signing in.
    let store = portcullis::app::open_store(&stack.config)
        .await
        .expect("store");
    let doc = portcullis::policy::PolicyDocument::from_yaml(
        "promote",
        &format!(
            "{}  - {{email: ada@example.com, roles: [admin]}}\n",
            support::oidc::POLICY
        ),
    )
    .expect("policy");
    portcullis::manage::apply(&store, &doc, false, false)
        .await
        .expect("apply");
    store.close().await;

    // As a Bearer token: allowed, never renewed (no cookie to set).
    let res = check(
        stack.server.grpc,
        &[("authorization", &format!("Bearer {jwt}"))],
    )
    .await;
    assert!(ok_headers(&res).is_some(), "{res:?}");
    assert_eq!(set_cookies(&res), Vec::<String>::new());

    // As the cookie: allowed, with a fresh cookie on the parent domain.
    let cookie = format!("theme=dark; jwt-token={jwt}");
    let res = check(stack.server.grpc, &[("cookie", &cookie)]).await;
    assert!(ok_headers(&res).is_some(), "{res:?}");
    let renewed = set_cookies(&res);
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    for attribute in [
        "Domain=example.com",
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(
            renewed[0].split("; ").any(|a| a == attribute),
            "{attribute} in {}",
            renewed[0]
        );
    }
    let fresh = cookie_value(&renewed, "jwt-token").expect("jwt").to_owned();
    let new = claims(&fresh);
    assert_ne!(new["jti"], old["jti"]);
    assert_eq!(new["sid"], old["sid"]);
    assert_eq!(new["sub"], old["sub"]);
    assert_eq!(
        new["roles"],
        json!(["admin"]),
        "renewal picks up the current roles"
    );
    assert!(new["exp"].as_i64().unwrap() >= old["exp"].as_i64().unwrap());
    // The fresh token is accepted in its turn.
    let res = check(
        stack.server.grpc,
        &[("cookie", &format!("jwt-token={fresh}"))],
    )
    .await;
    assert_eq!(ok_headers(&res).expect("allowed")["x-auth-roles"], "admin");

    // Sign out: the session is revoked, so that cookie is never renewed again, whether the
    // sidecar has already reloaded (deny) or not yet (allow without a cookie).
    let other = login_jwt(&stack, "grace").await;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/auth/logout", stack.server.http))
        .header("cookie", format!("jwt-token={other}"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let res = check(
        stack.server.grpc,
        &[("cookie", &format!("jwt-token={other}"))],
    )
    .await;
    assert_eq!(set_cookies(&res), Vec::<String>::new(), "{res:?}");
    assert!(refused_within_reload(stack.server.grpc, &other).await);
    stack.server.stop().await;
}

#[tokio::test]
async fn a_cookie_far_from_expiry_is_not_renewed() {
    let stack = LoginStack::start("  renew_before: 1m\n").await;
    let jwt = login_jwt(&stack, "ada").await;
    let res = check(
        stack.server.grpc,
        &[("cookie", &format!("jwt-token={jwt}"))],
    )
    .await;
    assert!(ok_headers(&res).is_some(), "{res:?}");
    assert_eq!(set_cookies(&res), Vec::<String>::new());
    stack.server.stop().await;
}

/// Issue 21: where the provider's session lives on, a sign-out is undone by the next visit
/// (to /auth/login, to the provider, straight back). First, as a baseline, that silent pass.
async fn sign_in_passes_silently(stack: &LoginStack, browser: &Browser) {
    let page = browser
        .follow(&stack.login_url(APP), |u| u.contains("/auth/callback"))
        .await;
    assert!(
        page.location
            .as_deref()
            .is_some_and(|l| l.contains("/auth/callback")),
        "the provider's session signs the browser straight back in: {} {}",
        page.status,
        page.body
    );
}

/// A browser signed in as ada, whose next sign-in passes silently (the baseline).
async fn signed_in_with_a_provider_session(stack: &LoginStack) -> (Browser, String) {
    let browser = Browser::new();
    let page = browser_login(stack, &browser, "ada", APP).await;
    let jwt = cookie_value(&page.set_cookies, "jwt-token")
        .expect("jwt cookie")
        .to_owned();
    sign_in_passes_silently(stack, &browser).await;
    (browser, jwt)
}

/// Following `url` (a sign-in) lands on the provider's own login form, not the callback.
async fn shows_provider_login_form(browser: &Browser, url: &str, issuer: &str) {
    let page = browser.follow(url, |u| u.contains("/auth/callback")).await;
    assert!(
        page.url.as_str().starts_with(issuer)
            && page.status == 200
            && page.body.contains("name=\"login\""),
        "not the provider's login form: {} {} {:?}",
        page.url,
        page.status,
        page.location
    );
}

/// A browser's cookie-borne sign-out from the app's own page.
async fn browser_logout(stack: &LoginStack, browser: &Browser, jwt: &str) -> support::oidc::Page {
    let r = browser
        .client
        .post(format!("{}/auth/logout", stack.server.http))
        .header("cookie", format!("jwt-token={jwt}"))
        .header("origin", "https://app.example.com")
        .form(&[("redirect_url", "https://app.example.com/bye")])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let set_cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    support::oidc::Page {
        status,
        url: r.url().clone(),
        location,
        set_cookies,
        body: r.text().await.unwrap_or_default(),
    }
}

fn has_attributes(set_cookies: &[String], name: &str, attributes: &[&str]) -> bool {
    set_cookies.iter().any(|c| {
        c.starts_with(&format!("{name}="))
            && attributes.iter().all(|a| c.split("; ").any(|x| x == *a))
    })
}

#[tokio::test]
async fn a_browser_sign_out_ends_the_providers_session_and_returns_to_the_target() {
    let stack = LoginStack::start("").await;
    let issuer = stack.provider.issuer.clone();
    let (browser, jwt) = signed_in_with_a_provider_session(&stack).await;

    // Sign out: the session is revoked, the cookie cleared, and the browser goes to the
    // provider's end_session_endpoint (RP-Initiated Logout) with our client id and the way back.
    let out = browser_logout(&stack, &browser, &jwt).await;
    assert_eq!(out.status, 303, "{}", out.body);
    let end = out.location.clone().expect("location");
    assert!(end.starts_with(&format!("{issuer}/session/end?")), "{end}");
    assert_eq!(query_param(&end, "client_id").as_deref(), Some("web"));
    assert_eq!(
        query_param(&end, "post_logout_redirect_uri"),
        Some(format!("{}/auth/logout/done", stack.setup.public_url()))
    );
    let state = query_param(&end, "state").expect("state");
    assert!(state.len() >= 22, "{state}");
    assert_eq!(
        query_param(&end, "id_token_hint"),
        None,
        "no token in a URL"
    );
    assert!(has_attributes(
        &out.set_cookies,
        "jwt-token",
        &["Domain=example.com", "Path=/", "Max-Age=0"]
    ));
    assert!(has_attributes(
        &out.set_cookies,
        "portcullis-logout",
        &[
            "HttpOnly",
            "SameSite=Lax",
            "Path=/auth/logout/done",
            "Domain=example.com"
        ]
    ));
    let transaction = cookie_value(&out.set_cookies, "portcullis-logout")
        .unwrap()
        .to_owned();
    assert!(
        !transaction.contains("example.com") && !transaction.contains(&state),
        "the transaction cookie is encrypted"
    );
    assert!(refused_within_reload(stack.server.grpc, &jwt).await);

    // At the provider: its sign-out confirmation (answered yes), then back to portcullis.
    let confirm = browser.get(&end).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let action = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#)
        .unwrap()
        .captures(&confirm.body)
        .map(|c| confirm.url.join(&c[1]).unwrap())
        .expect("the provider's sign-out form");
    let fields: Vec<(String, String)> =
        regex::Regex::new(r#"<input type="hidden" name="([^"]+)" value="([^"]*)""#)
            .unwrap()
            .captures_iter(&confirm.body)
            .map(|c| (c[1].to_owned(), c[2].to_owned()))
            .collect();
    let r = browser
        .client
        .post(action)
        .form(&fields)
        .send()
        .await
        .unwrap();
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        back.starts_with(&format!("{}/auth/logout/done?", stack.setup.public_url())),
        "{back}"
    );
    assert_eq!(query_param(&back, "state").as_deref(), Some(state.as_str()));
    let done = |url: String, cookie: Option<String>| {
        let mut request = Browser::new().client.get(url);
        if let Some(c) = cookie {
            request = request.header("cookie", format!("portcullis-logout={c}"));
        }
        async move {
            let r = request.send().await.unwrap();
            let location = r.headers()["location"].to_str().unwrap().to_owned();
            let cleared = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("portcullis-logout=;"));
            (r.status().as_u16(), location, cleared)
        }
    };
    // The state matches this browser's transaction: to the target the sign-out named.
    assert_eq!(
        done(back.clone(), Some(transaction.clone())).await,
        (303, "https://app.example.com/bye".to_owned(), true)
    );
    // Another state, or no transaction: the default target, never one from the request.
    let forged = with_param(&back, "state", "forged");
    assert_eq!(
        done(forged, Some(transaction)).await,
        (303, "https://app.example.com/".to_owned(), true)
    );
    assert_eq!(
        done(back, None).await,
        (303, "https://app.example.com/".to_owned(), true)
    );

    // The next sign-in from this browser shows the provider's login form.
    shows_provider_login_form(&browser, &stack.login_url(APP), &issuer).await;
    // An app's backend signing out with its Bearer token is not sent to the provider.
    let bearer = login_jwt(&stack, "grace").await;
    let r = Browser::new()
        .client
        .post(format!("{}/auth/logout", stack.server.http))
        .bearer_auth(&bearer)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://app.example.com/");
    stack.server.stop().await;
}

#[tokio::test]
async fn without_an_end_session_endpoint_the_next_sign_in_from_that_browser_asks() {
    let stack =
        LoginStack::start_without_provider_logout("  sign_out: {prompt: login, remember: 1h}\n")
            .await;
    let issuer = stack.provider.issuer.clone();
    let discovery: Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(discovery.get("end_session_endpoint").is_none(), "as Google");
    let (browser, jwt) = signed_in_with_a_provider_session(&stack).await;

    // Sign out: straight to the target, and the browser remembers it signed out.
    let out = browser_logout(&stack, &browser, &jwt).await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(out.location.as_deref(), Some("https://app.example.com/bye"));
    assert!(
        has_attributes(
            &out.set_cookies,
            "portcullis-signed-out",
            &[
                "HttpOnly",
                "SameSite=Lax",
                "Path=/auth/",
                "Domain=example.com",
                "Max-Age=3600"
            ]
        ),
        "{:?}",
        out.set_cookies
    );
    let marker = format!(
        "portcullis-signed-out={}",
        cookie_value(&out.set_cookies, "portcullis-signed-out").unwrap()
    );

    // The next sign-in from that browser asks: prompt=login, and the provider's login form.
    let r = browser
        .client
        .get(stack.login_url(APP))
        .header("cookie", &marker)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let to_provider = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        query_param(&to_provider, "prompt").as_deref(),
        Some("login")
    );
    shows_provider_login_form(&browser, &to_provider, &issuer).await;
    // Signing in there clears the mark (same Domain and Path): the sign-in after that is
    // silent again.
    let callback = browser
        .sign_in_until(&to_provider, "ada", "/auth/callback")
        .await;
    let signed_in = browser.get(&callback).await;
    assert_eq!(signed_in.status, 302, "{}", signed_in.body);
    assert!(cookie_value(&signed_in.set_cookies, "jwt-token").is_some());
    assert!(has_attributes(
        &signed_in.set_cookies,
        "portcullis-signed-out",
        &["Path=/auth/", "Domain=example.com", "Max-Age=0"]
    ));
    let r = browser.get(&stack.login_url(APP)).await;
    assert_eq!(
        r.location.as_deref().and_then(|l| query_param(l, "prompt")),
        None
    );
    sign_in_passes_silently(&stack, &browser).await;
    stack.server.stop().await;
}
