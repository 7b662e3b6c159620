//! The browser sign-in: `/auth/login` starts the code flow (state, nonce and PKCE kept in a
//! short-lived private cookie), `/auth/callback` checks it, exchanges the code, applies the
//! account rules and sets the JWT cookie or hands a one-time code to an app. A browser that
//! signed out where the provider's session lives on is asked again (`prompt`), once.

use super::*;
use crate::config::SignOutPrompt;
use openidconnect::core::CoreAuthPrompt;

#[derive(Serialize, Deserialize)]
pub(super) struct Transaction {
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
    /// the provider was asked to prompt (the browser had signed out)
    #[serde(default)]
    p: bool,
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    redirect_url: Option<String>,
}

pub(super) async fn login(
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
    // Signed out, with the provider's session still alive: this sign-in must not pass silently.
    let prompted = has_cookie(&headers, SIGNED_OUT_COOKIE);
    if prompted {
        request = request.add_prompt(match service.config.sign_out.prompt {
            SignOutPrompt::SelectAccount => CoreAuthPrompt::SelectAccount,
            SignOutPrompt::Login => CoreAuthPrompt::Login,
        });
    }
    let (url, state, nonce) = request.url();
    let transaction = Transaction {
        s: state.secret().clone(),
        n: nonce.secret().clone(),
        v: verifier.secret().clone(),
        r: target,
        t: started,
        p: prompted,
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
pub(super) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of the authorization response, when the provider sends it.
    iss: Option<String>,
}

pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    // Digests first, so the comparison takes the same time whatever the lengths.
    secret_digest(a).ct_eq(&secret_digest(b)).into()
}

pub(super) async fn callback(
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
    let prompted = transaction.as_ref().is_some_and(|t| t.p);
    let mut response = complete_login(&service, transaction, q).await;
    if prompted && response.status() == StatusCode::FOUND {
        // Signed in again, having been asked: the browser is no longer "signed out".
        let clear = flow_cookie(
            &service,
            SIGNED_OUT_COOKIE,
            String::new(),
            "/auth/",
            std::time::Duration::ZERO,
        );
        if let Ok(v) = HeaderValue::from_str(&clear.to_string()) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
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
