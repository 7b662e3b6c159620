//! The login endpoints over HTTP (axum): `/auth/login`, `/auth/callback`, `/auth/token`,
//! `/auth/userinfo`, `/auth/logout`, `/auth/logout/done`, `/.well-known/jwks.json` and
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

use super::{
    now, secret_digest, LoginError, LoginService, Refusal, Target, LOGIN_COOKIE, LOGOUT_COOKIE,
    SIGNED_OUT_COOKIE,
};
use crate::store::RefreshOutcome;

type Shared = Arc<LoginService>;

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Largest `/auth/token` or `/auth/logout` body read.
const MAX_FORM_BYTES: usize = 64 * 1024;

mod discovery;
mod session;
mod signin;
mod token;

use discovery::{jwks, openid_configuration};
use session::{logout, logout_done, userinfo};
use signin::{callback, login};
use token::token;

pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/token", post(token))
        .route("/auth/userinfo", get(userinfo))
        .route("/auth/logout", post(logout))
        .route("/auth/logout/done", get(logout_done))
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
        Refusal::EmailTaken => {
            "Your identity provider now gives your account an email address that belongs to \
             another user here. Ask an administrator to resolve it."
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

/// A cookie of the sign-in machinery (not the JWT): HttpOnly, Lax, on the cookie domain when
/// one is set, at `path`, living `max_age` (0 clears it).
fn flow_cookie(
    service: &LoginService,
    name: &'static str,
    value: String,
    path: &'static str,
    max_age: std::time::Duration,
) -> Cookie<'static> {
    let mut c = Cookie::build((name, value))
        .path(path)
        .http_only(true)
        .secure(service.cookie().secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64));
    if let Some(d) = &service.cookie().domain {
        c = c.domain(d.clone());
    }
    c.build()
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

/// Whether the request carries a cookie named `name`.
fn has_cookie(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(axum::http::header::COOKIE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| Cookie::split_parse(v).flatten().any(|c| c.name() == name))
    })
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

#[cfg(test)]
mod tests;
