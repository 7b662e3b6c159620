//! `POST /auth/token` (RFC 6749 §5 answers): the one-time handoff code, refresh-token rotation
//! with reuse detection, and the RFC 8693 exchange of a provider ID or access token.

use super::*;

pub(super) fn token_response(
    access: crate::login::Minted,
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

pub(super) async fn token(
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
pub(super) async fn issue_for_session(
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
    let refresh = crate::login::random_secret();
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
    let next = crate::login::random_secret();
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
