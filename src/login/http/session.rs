//! The signed-in caller's own endpoints: `GET /auth/userinfo` and `POST /auth/logout`.

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

pub(super) async fn logout(
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
