//! The login endpoints over HTTP (axum): `/auth/login`, `/auth/callback`, `/auth/token`,
//! `/auth/userinfo`, `/auth/logout`, `/.well-known/jwks.json` and
//! `/.well-known/openid-configuration`. Bad input gets a clear page or an RFC 6749 §5 error and
//! changes nothing; a redirect goes only to a checked target; no token reaches a URL or a log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, PrivateCookieJar, SameSite};
use openidconnect::core::{CoreAuthenticationFlow, CoreIdToken};
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier, Scope,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{now, secret_digest, LoginError, LoginService, Refusal, Target, LOGIN_COOKIE};
use crate::store::RefreshOutcome;

type Shared = Arc<LoginService>;

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Largest `/auth/token` or `/auth/logout` body read.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/token", post(token))
        .route("/auth/userinfo", get(userinfo))
        .route("/auth/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(service)
}

/// A plain page with a fixed message (nothing from the request is echoed).
fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n"
    );
    (status, [(CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

fn not_ready() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is starting",
        "The identity provider has not been reached yet. Try again in a moment.",
    )
}

fn unavailable(e: &LoginError) -> Response {
    tracing::error!(error = %crate::error_chain(e), "login failed");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in is unavailable",
        "Something went wrong on our side. Try again in a moment.",
    )
}

fn refused_page(r: &Refusal) -> Response {
    tracing::info!(reason = %r, "sign-in refused");
    let message = match r {
        Refusal::UserDisabled => "Your account is disabled. Ask an administrator to enable it.",
        Refusal::EmailNotVerified => "Your identity provider has not verified your email address.",
        Refusal::WrongHostedDomain | Refusal::EmailDomainNotAllowed => {
            "This account is not one of the organisation's accounts."
        }
        Refusal::EmailLinkedElsewhere => {
            "This email address is already linked to another account at the provider."
        }
    };
    page(StatusCode::FORBIDDEN, "Sign-in refused", message)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (
            status,
            [
                (LOCATION, v),
                (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            "Bad redirect",
            "The target is not valid.",
        ),
    }
}

/// The JWT cookie on the parent domain, or its clearing (same Domain and Path).
pub(super) fn jwt_cookie(service: &LoginService, value: String, clear: bool) -> Cookie<'static> {
    cookie_for(
        &service.cookie_name,
        service.cookie(),
        service.config.token.lifetime,
        value,
        clear,
    )
}

fn cookie_for(
    name: &str,
    cfg: &crate::config::CookieConfig,
    lifetime: std::time::Duration,
    value: String,
    clear: bool,
) -> Cookie<'static> {
    let mut c = Cookie::build((name.to_owned(), value))
        .path("/")
        .http_only(true)
        .secure(cfg.secure)
        .same_site(SameSite::Lax);
    if let Some(d) = &cfg.domain {
        c = c.domain(d.clone());
    }
    let max_age = if clear {
        0
    } else {
        cfg.max_age(lifetime).as_secs() as i64
    };
    c.max_age(cookie::time::Duration::seconds(max_age)).build()
}

#[derive(Serialize, Deserialize)]
struct Transaction {
    /// state
    s: String,
    /// nonce
    n: String,
    /// PKCE verifier
    v: String,
    /// the checked redirect target
    r: String,
    /// started at (unix seconds)
    t: i64,
}

#[derive(Deserialize)]
struct LoginQuery {
    redirect_url: Option<String>,
}

async fn login(
    State(service): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let target = q
        .redirect_url
        .unwrap_or_else(|| service.config.redirects.default.clone());
    if let Err(e) = service.redirects.check(&target) {
        tracing::info!(reason = %e, "login: redirect target refused");
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in link not valid",
            "The address to return to after signing in is not allowed.",
        );
    }
    let Some(provider) = service.provider() else {
        return not_ready();
    };
    let Ok(started) = now() else {
        return unavailable(&LoginError::Clock);
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = provider
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in &service.config.provider.scopes {
        if scope != "openid" {
            request = request.add_scope(Scope::new(scope.clone()));
        }
    }
    if let Some(hd) = &service.config.accounts.hosted_domain {
        // Only a hint to the provider: the callback checks the `hd` claim.
        request = request.add_extra_param("hd", hd.clone());
    }
    let (url, state, nonce) = request.url();
    let transaction = Transaction {
        s: state.secret().clone(),
        n: nonce.secret().clone(),
        v: verifier.secret().clone(),
        r: target,
        t: started,
    };
    let Ok(value) = serde_json::to_string(&transaction) else {
        return unavailable(&LoginError::Clock);
    };
    let cookie = Cookie::build((LOGIN_COOKIE, value))
        .path("/auth/callback")
        .http_only(true)
        .secure(service.cookie().secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(
            service.config.login_timeout.as_secs() as i64,
        ))
        .build();
    let jar = PrivateCookieJar::from_headers(&headers, service.state_key.clone()).add(cookie);
    (jar, redirect(StatusCode::FOUND, url.as_str())).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of the authorization response, when the provider sends it.
    iss: Option<String>,
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    // Digests first, so the comparison takes the same time whatever the lengths.
    secret_digest(a).ct_eq(&secret_digest(b)).into()
}

async fn callback(
    State(service): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let jar = PrivateCookieJar::from_headers(&headers, service.state_key.clone());
    let transaction: Option<Transaction> = jar
        .get(LOGIN_COOKIE)
        .and_then(|c| serde_json::from_str(c.value()).ok());
    // The transaction is used once, whatever happens next.
    let jar = jar.remove(Cookie::build(LOGIN_COOKIE).path("/auth/callback").build());
    let response = complete_login(&service, transaction, q).await;
    (jar, response).into_response()
}

async fn complete_login(
    service: &LoginService,
    transaction: Option<Transaction>,
    q: CallbackQuery,
) -> Response {
    let bad = |message: &str| page(StatusCode::BAD_REQUEST, "Sign-in failed", message);
    let Some(tx) = transaction else {
        return bad("This sign-in has expired or was started in another browser. Start again.");
    };
    if q.error.is_some() {
        return bad("The identity provider did not sign you in.");
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return bad("The identity provider's answer is incomplete.");
    };
    if !constant_time_eq(&state, &tx.s) {
        tracing::info!("login: state mismatch");
        return bad("This sign-in does not match the one this browser started. Start again.");
    }
    let Ok(at) = now() else {
        return unavailable(&LoginError::Clock);
    };
    if at - tx.t > service.config.login_timeout.as_secs() as i64 || at < tx.t - 60 {
        return bad("This sign-in has expired. Start again.");
    }
    // The target was checked at /auth/login; checked again (the cookie could be old).
    let Ok(target) = service.redirects.check(&tx.r) else {
        return bad("The address to return to is not allowed.");
    };
    let Some(provider) = service.provider() else {
        return not_ready();
    };
    // Mix-up defence (RFC 9207): an answer naming another issuer is refused.
    if q.iss
        .as_deref()
        .is_some_and(|iss| iss != provider.issuer.as_str())
    {
        return bad("The answer came from another identity provider. Start again.");
    }
    let exchange = match provider.client.exchange_code(AuthorizationCode::new(code)) {
        Ok(r) => r,
        Err(_) => return unavailable(&LoginError::Clock),
    };
    let response = match exchange
        .set_pkce_verifier(PkceCodeVerifier::new(tx.v))
        .request_async(&provider.http)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %crate::error_chain(&e), "login: code exchange refused");
            return bad("The identity provider refused the sign-in code. Start again.");
        }
    };
    let Some(id_token) = response.id_token() else {
        return bad("The identity provider sent no ID token.");
    };
    let verified = match provider
        .verify_id_token(id_token, Some(&Nonce::new(tx.n)))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(reason = %e, "login: ID token refused");
            return bad("The identity provider's ID token could not be verified. Start again.");
        }
    };
    let user = match service.user_for(&verified).await {
        Ok(u) => u,
        Err(LoginError::Refused(r)) => return refused_page(&r),
        Err(e) => return unavailable(&e),
    };
    let (sid, _) = match service.open_session(&user, false).await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    match target {
        Target::UnderCookieDomain(url) => {
            // The session was just opened: it outlives the token (validated).
            let minted = match service.mint(&user, &sid, i64::MAX) {
                Ok(m) => m,
                Err(e) => return unavailable(&e),
            };
            let cookie = jwt_cookie(service, minted.token, false);
            let mut response = redirect(StatusCode::FOUND, url.as_str());
            if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
                response.headers_mut().append(SET_COOKIE, v);
            }
            response
        }
        Target::Elsewhere { mut url, origin } => {
            let code = match service.handoff_code(&sid, &origin).await {
                Ok(c) => c,
                Err(e) => return unavailable(&e),
            };
            url.query_pairs_mut().append_pair("code", &code);
            redirect(StatusCode::FOUND, url.as_str())
        }
    }
}

/// RFC 6749 §5.2 errors.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [
            (CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn server_trouble(e: &LoginError) -> Response {
    if let LoginError::Refused(r) = e {
        return invalid_grant(&r.to_string());
    }
    tracing::error!(error = %crate::error_chain(e), "token endpoint failed");
    oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "try again later",
    )
}

/// The form parameters, each at most once (RFC 6749 §3.2).
fn form(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, Box<Response>> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(Box::new(invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )));
    }
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(Box::new(invalid_request("a parameter is repeated")));
        }
    }
    Ok(out)
}

fn token_response(
    access: super::Minted,
    refresh: Option<String>,
    issued_type: Option<&str>,
) -> Response {
    let mut body = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": access.expires_in,
    });
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    if let Some(t) = issued_type {
        body["issued_token_type"] = t.into();
    }
    (
        StatusCode::OK,
        [
            (CACHE_CONTROL, "no-store"),
            (axum::http::header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

async fn token(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let params = match form(&headers, &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(grant) = params.get("grant_type") else {
        return invalid_request("grant_type is required");
    };
    match grant.as_str() {
        "authorization_code" => handoff_grant(&service, &params).await,
        "refresh_token" => refresh_grant(&service, &params).await,
        GRANT_TOKEN_EXCHANGE => exchange_grant(&service, &params).await,
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or token-exchange",
        ),
    }
}

/// Mints an access token and starts (or continues) the refresh family of a session.
async fn issue_for_session(
    service: &LoginService,
    sid: &str,
    refresh: Option<String>,
    issued_type: Option<&str>,
) -> Response {
    let Ok(at) = now() else {
        return server_trouble(&LoginError::Clock);
    };
    let session = match service.store().session(sid).await {
        Ok(Some(s)) if s.is_live(at) => s,
        Ok(_) => return invalid_grant("the session has ended"),
        Err(e) => return server_trouble(&e.into()),
    };
    let user = match service.store().login_user(session.user_id).await {
        Ok(Some(u)) if !u.disabled => u,
        Ok(_) => return invalid_grant("the account is disabled"),
        Err(e) => return server_trouble(&e.into()),
    };
    match service.mint(&user, sid, session.expires_at) {
        Ok(m) => token_response(m, refresh, issued_type),
        Err(e) => server_trouble(&e),
    }
}

async fn handoff_grant(service: &LoginService, params: &HashMap<String, String>) -> Response {
    let (Some(code), Some(redirect_uri)) = (params.get("code"), params.get("redirect_uri")) else {
        return invalid_request("code and redirect_uri are required");
    };
    let Some(origin) = service.redirects.allowed_origin(redirect_uri) else {
        return invalid_grant("redirect_uri is not allowed");
    };
    let Ok(at) = now() else {
        return server_trouble(&LoginError::Clock);
    };
    let (sid, bound) = match service.store().take_handoff(&secret_digest(code), at).await {
        Ok(Some(found)) => found,
        Ok(None) => return invalid_grant("the code is unknown, used or expired"),
        Err(e) => return server_trouble(&e.into()),
    };
    if bound != origin {
        return invalid_grant("the code was issued for another origin");
    }
    let refresh = super::random_secret();
    if let Err(e) = service
        .store()
        .add_refresh(&sid, &secret_digest(&refresh), at)
        .await
    {
        return server_trouble(&e.into());
    }
    issue_for_session(service, &sid, Some(refresh), None).await
}

async fn refresh_grant(service: &LoginService, params: &HashMap<String, String>) -> Response {
    let Some(presented) = params.get("refresh_token") else {
        return invalid_request("refresh_token is required");
    };
    let Ok(at) = now() else {
        return server_trouble(&LoginError::Clock);
    };
    let next = super::random_secret();
    match service
        .store()
        .rotate_refresh(&secret_digest(presented), &secret_digest(&next), at)
        .await
    {
        Ok(RefreshOutcome::Rotated { session_id }) => {
            issue_for_session(service, &session_id, Some(next), None).await
        }
        Ok(RefreshOutcome::Reused { .. }) => {
            tracing::warn!("refresh token reused: the session is revoked");
            invalid_grant("the refresh token was already used; the session is revoked")
        }
        Ok(RefreshOutcome::Refused) => invalid_grant("the refresh token is not valid"),
        Err(e) => server_trouble(&e.into()),
    }
}

async fn exchange_grant(service: &LoginService, params: &HashMap<String, String>) -> Response {
    let (Some(subject), Some(kind)) = (
        params.get("subject_token"),
        params.get("subject_token_type"),
    ) else {
        return invalid_request("subject_token and subject_token_type are required");
    };
    if let Some(requested) = params.get("requested_token_type") {
        if requested != TYPE_ACCESS_TOKEN && requested != TYPE_JWT {
            return invalid_request("requested_token_type must be access_token or jwt");
        }
    }
    let Some(provider) = service.provider() else {
        return oauth_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the identity provider has not been reached yet",
        );
    };
    let verified = match kind.as_str() {
        TYPE_ID_TOKEN => {
            let Ok(token) = subject.parse::<CoreIdToken>() else {
                return invalid_grant("the subject token is not an ID token");
            };
            provider.verify_id_token(&token, None).await
        }
        TYPE_ACCESS_TOKEN => provider.verify_access_token(subject).await,
        _ => return invalid_request("subject_token_type must be id_token or access_token"),
    };
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(reason = %e, "token exchange refused");
            return invalid_grant(&e.to_string());
        }
    };
    let user = match service.user_for(&verified).await {
        Ok(u) => u,
        Err(e) => return server_trouble(&e),
    };
    let (sid, refresh) = match service.open_session(&user, true).await {
        Ok(s) => s,
        Err(e) => return server_trouble(&e),
    };
    issue_for_session(service, &sid, refresh, Some(TYPE_ACCESS_TOKEN)).await
}

/// The one JWT a request carries (Bearer or the cookie); two different ones are refused.
fn presented_token(service: &LoginService, headers: &HeaderMap) -> Result<Option<String>, ()> {
    let mut bearer = None;
    for v in headers.get_all(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ())?;
        let token = v.strip_prefix("Bearer ").ok_or(())?;
        if bearer.replace(token.to_owned()).is_some() {
            return Err(());
        }
    }
    let mut cookie = None;
    for v in headers.get_all(axum::http::header::COOKIE) {
        let v = v.to_str().map_err(|_| ())?;
        for c in Cookie::split_parse(v).flatten() {
            if c.name() == service.cookie_name && cookie.replace(c.value().to_owned()).is_some() {
                return Err(());
            }
        }
    }
    match (bearer, cookie) {
        (Some(b), Some(c)) if b != c => Err(()),
        (Some(t), _) | (None, Some(t)) => Ok(Some(t)),
        (None, None) => Ok(None),
    }
}

async fn userinfo(State(service): State<Shared>, headers: HeaderMap) -> Response {
    let unauthorized = || {
        (
            StatusCode::UNAUTHORIZED,
            [
                (
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer error=\"invalid_token\"",
                ),
                (CACHE_CONTROL, "no-store"),
            ],
            Json(json!({"error": "invalid_token"})),
        )
            .into_response()
    };
    let Ok(Some(token)) = presented_token(&service, &headers) else {
        return unauthorized();
    };
    let (claims, user) = match service.verify_own(&token).await {
        Ok(Some(found)) => found,
        Ok(None) => return unauthorized(),
        Err(e) => return server_trouble(&e),
    };
    let permissions = match service.permissions_of(&user.roles) {
        Ok(p) => p,
        Err(e) => return server_trouble(&e),
    };
    (
        StatusCode::OK,
        [(CACHE_CONTROL, "no-store")],
        Json(json!({
            "sub": user.id.to_string(),
            "email": user.email,
            "name": user.name,
            "roles": user.roles,
            "permissions": permissions,
            "sid": claims.sid,
            "exp": claims.exp.map(|e| e.time().as_secs()),
        })),
    )
        .into_response()
}

async fn logout(
    State(service): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let params: HashMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let target = params
        .get("redirect_url")
        .cloned()
        .unwrap_or_else(|| service.config.redirects.default.clone());
    let Ok(target) = service.redirects.check(&target) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-out link not valid",
            "The address to return to after signing out is not allowed.",
        );
    };
    let token = match presented_token(&service, &headers) {
        Ok(t) => t,
        Err(()) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "The request carries more than one token.",
            )
        }
    };
    // A browser's cookie rides along on cross-site POSTs: its origin must be one of ours.
    let from_cookie = headers.get_all(axum::http::header::COOKIE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            Cookie::split_parse(v)
                .flatten()
                .any(|c| c.name() == service.cookie_name)
        })
    });
    if from_cookie {
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .or_else(|| headers.get(axum::http::header::REFERER))
            .and_then(|v| v.to_str().ok());
        if origin
            .and_then(|o| service.redirects.allowed_origin(o))
            .is_none()
        {
            return page(
                StatusCode::FORBIDDEN,
                "Sign-out refused",
                "Sign out from one of the organisation's own pages.",
            );
        }
    }
    if let Some(token) = token {
        match service.verify_own(&token).await {
            Ok(Some((claims, user))) => {
                if let Some(sid) = &claims.sid {
                    let Ok(at) = now() else {
                        return unavailable(&LoginError::Clock);
                    };
                    if let Err(e) = service.store().revoke_session(sid, "logout", at).await {
                        return unavailable(&e.into());
                    }
                    tracing::info!(user_id = user.id, "signed out: session revoked");
                }
            }
            Ok(None) => {}
            Err(e) => return unavailable(&e),
        }
    }
    let mut response = redirect(StatusCode::SEE_OTHER, target.url().as_str());
    let clear = jwt_cookie(&service, String::new(), true);
    if let Ok(v) = HeaderValue::from_str(&clear.to_string()) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

async fn jwks(State(service): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(CACHE_CONTROL, "public, max-age=300")],
        Json(service.keys.jwks()),
    )
        .into_response()
}

async fn openid_configuration(State(service): State<Shared>) -> Response {
    let base = service.config.public_url.trim_end_matches('/');
    let algs: Vec<String> = service
        .keys
        .published
        .iter()
        .filter_map(|p| p.jwk.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
        .collect();
    (
        StatusCode::OK,
        [(CACHE_CONTROL, "public, max-age=300")],
        Json(json!({
            "issuer": service.config.token.issuer,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "authorization_endpoint": format!("{base}/auth/login"),
            "token_endpoint": format!("{base}/auth/token"),
            "userinfo_endpoint": format!("{base}/auth/userinfo"),
            "end_session_endpoint": format!("{base}/auth/logout"),
            "grant_types_supported": ["authorization_code", "refresh_token", GRANT_TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": algs,
            "subject_types_supported": ["public"],
            "response_types_supported": ["code"],
            "claims_supported": ["sub", "email", "name", "roles", "permissions", "iss", "aud", "iat", "exp", "jti", "sid"],
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwt_cookie_is_secure_http_only_lax_on_the_parent_domain_and_cleared_alike() {
        let cfg = crate::config::CookieConfig {
            domain: Some("example.com".to_owned()),
            secure: true,
            max_age: None,
        };
        let lifetime = std::time::Duration::from_secs(3600);
        let set = cookie_for("jwt-token", &cfg, lifetime, "v".to_owned(), false).to_string();
        let mut attributes: Vec<&str> = set.split("; ").collect();
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            [
                "Domain=example.com",
                "HttpOnly",
                "Max-Age=3600",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "jwt-token=v"
            ]
        );
        let cleared = cookie_for("jwt-token", &cfg, lifetime, String::new(), true).to_string();
        let mut attributes: Vec<&str> = cleared.split("; ").collect();
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            [
                "Domain=example.com",
                "HttpOnly",
                "Max-Age=0",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "jwt-token="
            ]
        );
    }

    #[test]
    fn state_comparison_is_exact() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }
}
