//! What other verifiers need: `/.well-known/jwks.json` and `/.well-known/openid-configuration`.

use super::*;

pub(super) async fn jwks(State(service): State<Shared>) -> Response {
    (
        StatusCode::OK,
        [(CACHE_CONTROL, "public, max-age=300")],
        Json(service.keys.jwks()),
    )
        .into_response()
}

pub(super) async fn openid_configuration(State(service): State<Shared>) -> Response {
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
