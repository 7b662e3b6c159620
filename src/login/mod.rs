//! Sign-in: portcullis as the issuer of its own JWTs. A browser signs in at the OpenID
//! provider (the code flow with state, nonce and PKCE, `provider`), the account rules decide
//! who may, the user is found or created by the provider account, and a session is opened;
//! the JWT (with `sid`) goes to the browser as a cookie on the parent domain, or to an app
//! elsewhere through a one-time code (`redirect`). Mobile apps exchange provider tokens at
//! `/auth/token`, refresh tokens rotate, logout revokes the session everywhere and ends the
//! provider's session (RP-initiated logout) or makes the browser's next sign-in ask. The HTTP edge
//! is `http`; nothing here logs a token, code or secret.

mod http;
pub mod provider;
pub mod redirect;

use std::sync::Arc;
use std::time::Duration;

use axum_extra::extract::cookie::Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use openidconnect::ClientSecret;
use serde::Serialize;

use crate::authz::SnapshotHandle;
use crate::config::{AccountRules, Config, CookieConfig, LoginConfig};
use crate::identity::{digest, ClaimRules, IssuerKeys, TokenDigest, UnixTime};
use crate::policy::document::{AUTHENTICATED, PUBLIC};
use crate::store::{LinkOutcome, LoginStore, StoreError, UserRecord};

pub use http::router;
pub use provider::{Provider, ProviderError, VerifiedIdToken};
pub use redirect::{RedirectError, RedirectPolicy, Target};

/// The transaction cookie of a login in progress (encrypted; path `/auth/callback`).
pub const LOGIN_COOKIE: &str = "portcullis-login";
/// The transaction of a sign-out at the provider (encrypted: state and target; path
/// `/auth/logout/done`, on the cookie domain so the login host gets it back).
pub const LOGOUT_COOKIE: &str = "portcullis-logout";
/// "This browser signed out" where the provider's session lives on: the next sign-in asks
/// (path `/auth/`, on the cookie domain, `login.sign_out.remember` long).
pub const SIGNED_OUT_COOKIE: &str = "portcullis-signed-out";

/// Why a sign-in was refused (shown as a page, logged as the variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the provider did not vouch for this email address (email_verified)")]
    EmailNotVerified,
    #[error("accounts of this organisation only (hd)")]
    WrongHostedDomain,
    #[error("this email domain may not sign in")]
    EmailDomainNotAllowed,
    #[error("this email address belongs to another account")]
    EmailLinkedElsewhere,
    #[error("the account's new email address belongs to another user")]
    EmailTaken,
    #[error("this account is disabled")]
    UserDisabled,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the store failed")]
    Store(#[from] StoreError),
    #[error("cannot sign the token")]
    Sign(#[source] crate::identity::KeyError),
    #[error("no policy is loaded yet")]
    NoSnapshot,
    #[error("the system clock cannot be read")]
    Clock,
}

/// Everything the login endpoints share.
pub struct LoginService {
    config: LoginConfig,
    cookie_name: String,
    keys: IssuerKeys,
    own_rules: ClaimRules,
    redirects: RedirectPolicy,
    state_key: Key,
    client_secret: ClientSecret,
    provider: tokio::sync::OnceCell<Arc<Provider>>,
    store: Arc<dyn LoginStore>,
    snapshot: SnapshotHandle,
}

/// The claims of a token portcullis mints.
#[derive(Debug, Serialize)]
pub struct MintedClaims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: String,
    pub email: &'a str,
    /// The provider verified it (the account rules require it), so Check's
    /// `subject_claim: email` mode accepts these tokens too.
    pub email_verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub roles: &'a [String],
    pub permissions: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub sid: &'a str,
}

/// A minted token and how long it lives.
pub struct Minted {
    pub token: String,
    pub expires_in: u64,
}

/// A random opaque secret (refresh token, handoff code, session id): 256 bits, base64url.
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub fn now() -> Result<i64, LoginError> {
    UnixTime::now()
        .map(|t| t.as_secs())
        .ok_or(LoginError::Clock)
}

/// The account rules, on the verified claims: a verified email, the hosted domain, the
/// email-domain allow-list. Returns the email, lower-cased.
pub fn check_account(rules: &AccountRules, id: &VerifiedIdToken) -> Result<String, Refusal> {
    let email = match (&id.email, id.email_verified) {
        (Some(e), true) if e.contains('@') => e.to_ascii_lowercase(),
        _ => return Err(Refusal::EmailNotVerified),
    };
    if let Some(hd) = &rules.hosted_domain {
        if id.hd.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(hd.as_str()) {
            return Err(Refusal::WrongHostedDomain);
        }
    }
    if !rules.email_domains.is_empty() {
        let domain = email.rsplit('@').next().unwrap_or_default();
        if !rules.email_domains.iter().any(|d| d == domain) {
            return Err(Refusal::EmailDomainNotAllowed);
        }
    }
    Ok(email)
}

impl LoginService {
    pub fn new(
        config: &Config,
        keys: IssuerKeys,
        client_secret: String,
        state_secret: &[u8],
        store: Arc<dyn LoginStore>,
        snapshot: SnapshotHandle,
    ) -> anyhow::Result<Self> {
        let login = config
            .login
            .clone()
            .ok_or_else(|| anyhow::anyhow!("login is not configured"))?;
        if state_secret.len() < 32 {
            anyhow::bail!("login state secret: at least 32 bytes are required");
        }
        let public = url::Url::parse(&login.public_url)?;
        let redirects =
            RedirectPolicy::new(&login.redirects, login.cookie.domain.as_deref(), &public);
        Ok(LoginService {
            own_rules: ClaimRules {
                issuer: Some(login.token.issuer.clone()),
                audience: vec![login.token.audience.clone()],
                leeway: config.jwt.leeway,
            },
            cookie_name: config.jwt.cookie_name.clone(),
            config: login,
            keys,
            redirects,
            state_key: Key::derive_from(state_secret),
            client_secret: ClientSecret::new(client_secret),
            provider: tokio::sync::OnceCell::new(),
            store,
            snapshot,
        })
    }

    pub fn config(&self) -> &LoginConfig {
        &self.config
    }

    pub fn cookie(&self) -> &CookieConfig {
        &self.config.cookie
    }

    /// The provider once discovered (`None` until then: not ready).
    pub fn provider(&self) -> Option<&Arc<Provider>> {
        self.provider.get()
    }

    pub fn is_ready(&self) -> bool {
        self.provider.initialized()
    }

    /// Discovers the provider (retrying with backoff until it answers or `stop`), then keeps
    /// its keys fresh in the background.
    pub async fn connect_provider(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let mut wait = Duration::from_millis(200);
        let provider = loop {
            match Provider::discover(&self.config, self.client_secret.clone()).await {
                Ok(p) => break Arc::new(p),
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), retry_in = ?wait, "login provider discovery failed");
                    let mut stop = stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        };
        tracing::info!(issuer = %provider.issuer.as_str(), "login provider discovered");
        let keys = provider.keys.clone();
        let after = provider.refresh_after;
        let _ = self.provider.set(provider);
        keys.refresh_in_background(after, stop).await;
    }

    /// Finds or creates the user of a verified provider account, after the account rules; a
    /// linked user's email follows the provider's.
    pub async fn user_for(&self, id: &VerifiedIdToken) -> Result<UserRecord, LoginError> {
        let email = check_account(&self.config.accounts, id)?;
        let account = crate::store::AccountLink {
            provider: &self.config.provider.issuer,
            subject: &id.subject,
            email: &email,
            name: id.name.as_deref(),
        };
        let at = now()?;
        let outcome = match self
            .store
            .link_account(&account, &self.config.default_roles, at)
            .await
        {
            Ok(o) => o,
            // Two first sign-ins of one account at once: one creates the user, the other's
            // insert conflicts; asked again, it finds the link.
            Err(_) => {
                self.store
                    .link_account(&account, &self.config.default_roles, at)
                    .await?
            }
        };
        match outcome {
            LinkOutcome::User { user, created } => {
                if created {
                    tracing::info!(user_id = user.id, "user created at first sign-in");
                }
                if user.disabled {
                    return Err(Refusal::UserDisabled.into());
                }
                Ok(user)
            }
            LinkOutcome::EmailLinkedElsewhere => Err(Refusal::EmailLinkedElsewhere.into()),
            LinkOutcome::EmailTakenByAnother => Err(Refusal::EmailTaken.into()),
        }
    }

    /// Opens a session for `user`; with `refresh`, its first refresh token (returned).
    pub async fn open_session(
        &self,
        user: &UserRecord,
        refresh: bool,
    ) -> Result<(String, Option<String>), LoginError> {
        let sid = random_secret();
        let now = now()?;
        let expires = now + self.config.session_lifetime.as_secs() as i64;
        let token = refresh.then(random_secret);
        self.store
            .create_session(
                &sid,
                user.id,
                now,
                expires,
                token.as_deref().map(digest).as_ref(),
            )
            .await?;
        tracing::info!(user_id = user.id, "session opened");
        Ok((sid, token))
    }

    /// The permission names `roles` hold in the serving policy (reserved ones left out).
    pub fn permissions_of(&self, roles: &[String]) -> Result<Vec<String>, LoginError> {
        let guard = self.snapshot.load();
        let snapshot = guard.as_ref().ok_or(LoginError::NoSnapshot)?;
        let grants = snapshot.grants(true, [], roles.iter().map(String::as_str));
        Ok(snapshot
            .permission_names(&grants)
            .iter()
            .map(|p| p.to_string())
            .filter(|p| p != PUBLIC && p != AUTHENTICATED)
            .collect())
    }

    /// Mints a JWT for `user` in session `sid`, expiring no later than `session_ends`.
    pub fn mint(
        &self,
        user: &UserRecord,
        sid: &str,
        session_ends: i64,
    ) -> Result<Minted, LoginError> {
        let now = now()?;
        let lifetime = self
            .config
            .token
            .lifetime
            .as_secs()
            .min(session_ends.saturating_sub(now).max(0) as u64);
        let claims = MintedClaims {
            iss: &self.config.token.issuer,
            aud: &self.config.token.audience,
            sub: user.id.to_string(),
            email: &user.email,
            email_verified: true,
            name: user.name.as_deref(),
            roles: &user.roles,
            permissions: self.permissions_of(&user.roles)?,
            iat: now,
            exp: now + lifetime as i64,
            jti: uuid::Uuid::now_v7().to_string(),
            sid,
        };
        let token = self.keys.keys.mint(&claims).map_err(LoginError::Sign)?;
        Ok(Minted {
            token,
            expires_in: lifetime,
        })
    }

    /// A one-time code for `origin`, valid `HANDOFF_CODE_TTL`, stored as a digest.
    pub async fn handoff_code(&self, sid: &str, origin: &str) -> Result<String, LoginError> {
        let code = random_secret();
        let expires = now()? + crate::config::HANDOFF_CODE_TTL.as_secs() as i64;
        self.store
            .insert_handoff(&digest(&code), sid, origin, expires)
            .await?;
        Ok(code)
    }

    /// Verifies one of portcullis's own tokens and that its session is live; the claims.
    pub async fn verify_own(
        &self,
        token: &str,
    ) -> Result<Option<(crate::identity::Claims, UserRecord)>, LoginError> {
        let Ok((payload, _)) = self.keys.keys.verify_signature(token) else {
            return Ok(None);
        };
        let Some(now_t) = UnixTime::now() else {
            return Err(LoginError::Clock);
        };
        let Ok(claims) = self.own_rules.check(&payload, now_t) else {
            return Ok(None);
        };
        if let Some(sid) = &claims.sid {
            match self.store.session(sid).await? {
                Some(s) if s.is_live(now_t.as_secs()) => {}
                _ => return Ok(None),
            }
        }
        let Some(id) = claims.sub.as_deref().and_then(|s| s.parse::<i64>().ok()) else {
            return Ok(None);
        };
        match self.store.login_user(id).await? {
            Some(user) if !user.disabled => Ok(Some((claims, user))),
            _ => Ok(None),
        }
    }

    /// A fresh cookie (its `Set-Cookie` value) for one of our cookie JWTs, with the user's
    /// current roles, while its session lives; `None` when the token, its session or its user
    /// is no longer good.
    pub async fn renew(&self, token: &str) -> Result<Option<String>, LoginError> {
        let Some((claims, user)) = self.verify_own(token).await? else {
            return Ok(None);
        };
        let Some(sid) = claims.sid.as_deref() else {
            return Ok(None);
        };
        let session = match self.store.session(sid).await? {
            Some(s) if s.is_live(now()?) => s,
            _ => return Ok(None),
        };
        let minted = self.mint(&user, sid, session.expires_at)?;
        Ok(Some(
            http::jwt_cookie(self, minted.token, false).to_string(),
        ))
    }

    pub fn store(&self) -> &dyn LoginStore {
        self.store.as_ref()
    }
}

/// A token digest, as stored.
pub fn secret_digest(secret: &str) -> TokenDigest {
    digest(secret)
}

#[cfg(test)]
mod tests;
