//! The signed-in caller's own endpoints: `GET /auth/userinfo`, `POST /auth/logout` and
//! `GET /auth/logout/done`. A browser's sign-out from one of our pages also ends the
//! provider's session (OpenID Connect RP-Initiated Logout 1.0: `client_id`,
//! `post_logout_redirect_uri` back to `/auth/logout/done`, `state` bound to an encrypted
//! cookie holding the checked target); a provider without `end_session_endpoint` gets a
//! browser that asks at its next sign-in instead (`SIGNED_OUT_COOKIE`).

use axum::extract::RawQuery;
use openidconnect::{ClientId, CsrfToken, LogoutRequest, PostLogoutRedirectUrl};

use super::signin;
use super::*;

/// The one JWT a request carries (Bearer or the cookie); two different ones are refused.
pub(super) fn presented_token(
    service: &LoginService,
    headers: &HeaderMap,
) -> Result<Option<String>, ()> {
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

pub(super) async fn userinfo(State(service): State<Shared>, headers: HeaderMap) -> Response {
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

/// The one `redirect_url` of a logout, from the query string or the form body: given twice in
/// one place, or differently in both, is an error (`None` when it is given nowhere).
fn logout_target(query: Option<&str>, body: &[u8]) -> Result<Option<String>, ()> {
    let one = |pairs: url::form_urlencoded::Parse<'_>| {
        let mut found = None;
        for (k, v) in pairs {
            if k == "redirect_url" && found.replace(v.into_owned()).is_some() {
                return Err(());
            }
        }
        Ok(found)
    };
    let from_query = one(url::form_urlencoded::parse(
        query.unwrap_or_default().as_bytes(),
    ))?;
    let from_body = one(url::form_urlencoded::parse(body))?;
    match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => Err(()),
        (Some(t), _) | (None, Some(t)) => Ok(Some(t)),
        (None, None) => Ok(None),
    }
}

pub(super) async fn logout(
    State(service): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let Ok(target) = logout_target(query.as_deref(), &body) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-out link not valid",
            "The address to return to after signing out is given more than once.",
        );
    };
    let target = target.unwrap_or_else(|| service.config.redirects.default.clone());
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
    let from_cookie = has_cookie(&headers, &service.cookie_name);
    let from_our_page = headers
        .get(axum::http::header::ORIGIN)
        .or_else(|| headers.get(axum::http::header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|o| service.redirects.allowed_origin(o))
        .is_some();
    if from_cookie && !from_our_page {
        return page(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "Sign out from one of the organisation's own pages.",
        );
    }
    let bearer = headers.contains_key(axum::http::header::AUTHORIZATION);
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
    // A person pressing "sign out" on one of our pages (not an app's backend with a Bearer
    // token, nor a cross-site form): the provider's session must not sign them straight back.
    let browser = from_our_page && !bearer;
    let mut response = if browser {
        sign_out_at_provider(&service, target.url().as_str())
    } else {
        redirect(StatusCode::SEE_OTHER, target.url().as_str())
    };
    let clear = jwt_cookie(&service, String::new(), true);
    if let Ok(v) = HeaderValue::from_str(&clear.to_string()) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

/// The transaction of a sign-out at the provider, in `LOGOUT_COOKIE` (encrypted).
#[derive(Serialize, Deserialize)]
struct LogoutTransaction {
    /// state
    s: String,
    /// the checked target
    r: String,
    /// started at (unix seconds)
    t: i64,
}

/// The browser's way out: to the provider's `end_session_endpoint` (which sends it back to
/// `/auth/logout/done`, then to `target`) where there is one; otherwise straight to `target`,
/// remembering that this browser signed out so that its next sign-in asks.
fn sign_out_at_provider(service: &LoginService, target: &str) -> Response {
    let sign_out = &service.config.sign_out;
    let end_session = service
        .provider()
        .and_then(|p| p.end_session_url.clone())
        .filter(|_| sign_out.end_provider_session);
    let back = PostLogoutRedirectUrl::new(format!(
        "{}/auth/logout/done",
        service.config.public_url.trim_end_matches('/')
    ));
    let (Some(end_session), Ok(back), Ok(started)) = (end_session, back, now()) else {
        let marker = flow_cookie(
            service,
            SIGNED_OUT_COOKIE,
            "1".to_owned(),
            "/auth/",
            sign_out.remember,
        );
        let mut response = redirect(StatusCode::SEE_OTHER, target);
        if let Ok(v) = HeaderValue::from_str(&marker.to_string()) {
            response.headers_mut().append(SET_COOKIE, v);
        }
        tracing::info!("signed out: the next sign-in from this browser asks");
        return response;
    };
    let state = CsrfToken::new_random();
    let transaction = LogoutTransaction {
        s: state.secret().clone(),
        r: target.to_owned(),
        t: started,
    };
    let Ok(value) = serde_json::to_string(&transaction) else {
        return unavailable(&LoginError::Clock);
    };
    let url = LogoutRequest::from(end_session)
        .set_client_id(ClientId::new(service.config.provider.client_id.clone()))
        .set_post_logout_redirect_uri(back)
        .set_state(state)
        .http_get_url();
    let cookie = flow_cookie(
        service,
        LOGOUT_COOKIE,
        value,
        "/auth/logout/done",
        service.config.login_timeout,
    );
    let jar = PrivateCookieJar::new(service.state_key.clone()).add(cookie);
    tracing::info!("signed out: ending the provider's session");
    (jar, redirect(StatusCode::SEE_OTHER, url.as_str())).into_response()
}

#[derive(Deserialize)]
pub(super) struct LogoutDoneQuery {
    state: Option<String>,
}

/// The provider's return after ending its session: to the target the sign-out named when the
/// state matches this browser's transaction, else to `redirects.default`. Nothing from the
/// request is a redirect target.
pub(super) async fn logout_done(
    State(service): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<LogoutDoneQuery>,
) -> Response {
    let jar = PrivateCookieJar::from_headers(&headers, service.state_key.clone());
    let transaction: Option<LogoutTransaction> = jar
        .get(LOGOUT_COOKIE)
        .and_then(|c| serde_json::from_str(c.value()).ok());
    let clear = flow_cookie(
        &service,
        LOGOUT_COOKIE,
        String::new(),
        "/auth/logout/done",
        std::time::Duration::ZERO,
    );
    let fresh = |t: &LogoutTransaction| {
        now().is_ok_and(|at| {
            at - t.t <= service.config.login_timeout.as_secs() as i64 && at >= t.t - 60
        })
    };
    let target = match (&transaction, q.state.as_deref()) {
        (Some(t), Some(state)) if signin::constant_time_eq(state, &t.s) && fresh(t) => {
            service.redirects.check(&t.r).ok().map(|t| t.url().clone())
        }
        _ => None,
    };
    let target = match target {
        Some(url) => url.to_string(),
        None => {
            tracing::info!("logout: no matching sign-out transaction, to the default target");
            service.config.redirects.default.clone()
        }
    };
    let mut response = redirect(StatusCode::SEE_OTHER, &target);
    if let Ok(v) = HeaderValue::from_str(&clear.to_string()) {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::logout_target;

    #[test]
    fn logout_takes_redirect_url_from_the_query_or_the_body_once() {
        let t = |q: Option<&str>, b: &str| logout_target(q, b.as_bytes());
        let app = "https://app.example.com/bye?q=1";
        let encoded = "redirect_url=https%3A%2F%2Fapp.example.com%2Fbye%3Fq%3D1";
        assert_eq!(t(Some(encoded), ""), Ok(Some(app.to_owned())));
        assert_eq!(t(None, encoded), Ok(Some(app.to_owned())));
        assert_eq!(t(Some(encoded), encoded), Ok(Some(app.to_owned())));
        assert_eq!(t(Some("other=1"), "x=2"), Ok(None));
        assert_eq!(t(None, ""), Ok(None));
        assert_eq!(
            t(
                Some(encoded),
                "redirect_url=https%3A%2F%2Fevil.example.com%2F"
            ),
            Err(()),
            "a conflict is refused, not resolved"
        );
        assert_eq!(t(Some(&format!("{encoded}&{encoded}")), ""), Err(()));
        assert_eq!(t(None, &format!("{encoded}&{encoded}")), Err(()));
    }
}
