//! The Check itself, the same for every front: one request in (an `AccessRequest`), one
//! protocol-neutral answer out (a [`Verdict`]). Decides, applies the browser rules (CSRF, the
//! sign-in redirect: `browser`), takes the credential out, renews the cookie, and tells the
//! observers of every decision exactly once. Names no protobuf and no HTTP type: each front
//! (`grpc/`, `http_authz/`) converts its request to an `AccessRequest` and renders the verdict.

pub mod browser;
mod verdict;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::authz::{AccessRequest, Allow, Authorizer, Decision, DecisionIds, Deny, DenyCause};
use crate::config::Config;
use crate::identity::{Principal, UnixTime};
use crate::login::LoginService;
use browser::{credential_forwarding, BrowserRules, CredentialForwarding};

pub use verdict::{Allowed, Denied, Identity, LoginRedirect, PerRequest, Verdict, REDIRECT_STATUS};

/// Most bytes of rendered identities kept for reuse (the weigher counts each entry's
/// [`Identity::weight`]): a few thousand callers with a handful of permissions, or a few
/// hundred holding a thousand.
const RENDERED_CAPACITY_BYTES: u64 = 8 << 20;
/// An idle caller's identity is dropped after this; a new snapshot makes the old ones
/// unreachable at once (the key holds the snapshot's serial), this frees them.
const RENDERED_IDLE: Duration = Duration::from_secs(60);
/// A renewed cookie is reused for further requests with the same old token this long, so a
/// page's burst of requests near expiry mints one token, not one each.
const RENEWED_TTL: Duration = Duration::from_secs(30);
/// Most renewed cookies kept (one per token being renewed right now).
const RENEWED_CAPACITY: u64 = 10_000;

/// One answered decision, as observers see it after the answer is built.
pub struct Observed<'a> {
    pub decision: &'a Decision,
    pub request: &'a AccessRequest<'a>,
    /// The id in the deny body, in `x-auth-decision-id` and in the decision log.
    pub decision_id: &'a str,
    pub elapsed: Duration,
    /// What the candidate policy decided, when one is loaded (never enforced).
    pub shadow: Option<&'a Decision>,
}

/// Sees every decision the service answers (the metrics, the decision log). Called on the
/// request path: an observer does its slow work elsewhere.
pub trait DecisionObserver: Send + Sync {
    fn observe(&self, observed: &Observed<'_>);
}

/// The longest a Check waits for a cookie renewal (a store read) before answering without
/// one; Envoy's timeout is 0.5 s.
const RENEWAL_BUDGET: Duration = Duration::from_millis(100);

/// Answers Checks, for every front.
pub struct CheckService {
    authorizer: Arc<Authorizer>,
    ids: DecisionIds,
    observers: Vec<Arc<dyn DecisionObserver>>,
    /// (principal's address or 0 for anonymous, snapshot serial) -> its identity. A principal
    /// is one verified token (the identifier caches it by the token's digest), and a snapshot
    /// fixes the roles and permissions it holds: the same key, the same identity (and the same
    /// bytes for the front that encodes it).
    rendered: Cache<(usize, u64), Arc<Identity>>,
    /// Redirects to login and CSRF, when login is configured.
    browser: Option<BrowserRules>,
    /// What of the caller's credential upstreams get.
    forwarding: CredentialForwarding,
    /// Renews cookie JWTs close to expiry while their session lives (the login issuer's).
    renewal: Option<Arc<LoginService>>,
    /// The old token's id -> the renewed cookie (`Set-Cookie`), or `None`: not renewable.
    renewed: Cache<String, Option<Arc<str>>>,
}

impl CheckService {
    /// A Check service with the default browser behaviour: no login (401s, no CSRF check, no
    /// renewal) and the credential never forwarded.
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        CheckService {
            browser: None,
            forwarding: credential_forwarding(&Config::default()),
            renewal: None,
            renewed: Cache::builder()
                .max_capacity(RENEWED_CAPACITY)
                .time_to_live(RENEWED_TTL)
                .build(),
            authorizer,
            ids: DecisionIds::new(),
            observers: Vec::new(),
            rendered: Cache::builder()
                .max_capacity(RENDERED_CAPACITY_BYTES)
                .weigher(|_, v: &Arc<Identity>| v.weight())
                .time_to_idle(RENDERED_IDLE)
                .build(),
        }
    }

    /// Tells `observer` of every decision from now on (after those added before).
    pub fn with_observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    /// The browser rules (`login` configured) and `forward_credential` of `config`.
    pub fn with_config(mut self, config: &Config) -> Result<Self, url::ParseError> {
        self.browser = BrowserRules::from_config(config)?;
        self.forwarding = credential_forwarding(config);
        Ok(self)
    }

    /// Renews cookie JWTs close to expiry through the login issuer.
    pub fn with_renewal(mut self, login: Arc<LoginService>) -> Self {
        self.renewal = Some(login);
        self
    }

    /// The request headers a credential can arrive in: what the upstream receives of each is
    /// part of an allow's answer (`forward_credential`).
    pub fn credential_headers(&self) -> [&str; 3] {
        self.forwarding.credential_headers()
    }

    /// Decides one request and answers it: an allow's identity comes from the cache, the rest
    /// is built for this request. Every decision is observed once, after its answer is built.
    pub async fn check(&self, access: &AccessRequest<'_>) -> Verdict {
        let started = Instant::now();
        let decision_id = self.ids.next();
        let mut decision = self.authorizer.decide(access).await;
        if let (Decision::Allow(allow), Some(browser)) = (&decision, &self.browser) {
            if let Err(e) = browser.csrf(access) {
                decision = Decision::Deny(
                    Deny::new(allow.principal.clone(), e.into()).at_version(allow.policy_version),
                );
            }
        }
        log_decision(&decision, access, &decision_id);
        let answer = self.render(&decision, access, &decision_id).await;
        if !self.observers.is_empty() {
            let elapsed = started.elapsed();
            // After the live answer is built, and outside `elapsed`: the candidate's decision
            // is for the observers only.
            let shadow = self.authorizer.decide_shadow(access, &decision);
            let observed = Observed {
                decision: &decision,
                request: access,
                decision_id: &decision_id,
                elapsed,
                shadow: shadow.as_ref(),
            };
            for observer in &self.observers {
                observer.observe(&observed);
            }
        }
        answer
    }

    async fn render(
        &self,
        decision: &Decision,
        access: &AccessRequest<'_>,
        decision_id: &str,
    ) -> Verdict {
        match decision {
            Decision::Allow(allow) => {
                let extra = PerRequest {
                    stripping: self.forwarding.stripping(access, allow),
                    set_cookie: self.renewal_for(allow, access).await,
                };
                Verdict::Allow(Allowed::new(
                    self.identity_of(allow),
                    allow,
                    access,
                    decision_id,
                    extra,
                ))
            }
            Decision::Deny(deny) => {
                let redirect = self
                    .browser
                    .as_ref()
                    .and_then(|b| b.login_redirect(deny, access));
                match redirect {
                    Some(location) => Verdict::LoginRedirect(LoginRedirect {
                        location,
                        decision_id: decision_id.to_owned(),
                    }),
                    None => Verdict::Deny(Denied::new(deny, decision_id)),
                }
            }
        }
    }

    /// A renewed cookie for an allowed request authenticated by a cookie JWT that expires
    /// within `login.renew_before` and belongs to a live session; `None` otherwise.
    async fn renewal_for(&self, allow: &Allow, access: &AccessRequest<'_>) -> Option<String> {
        let login = self.renewal.as_ref()?;
        let browser = self.browser.as_ref()?;
        let Some(Principal::Jwt(jwt)) = allow.principal.as_deref() else {
            return None;
        };
        let (jti, _) = jwt.jti.as_ref().zip(jwt.sid.as_ref())?;
        let now = UnixTime::now()?;
        let remaining = jwt.expires_at.as_secs().saturating_sub(now.as_secs());
        if remaining > login.config().renew_before.as_secs() as i64 {
            return None;
        }
        let token = browser.cookie_token(access)?;
        if let Some(done) = self.renewed.get(jti) {
            return done.map(|c| c.to_string());
        }
        // Renewal reads the session and the user's roles from the store: the one store read
        // a Check can make, once per token (remembered below), only for a cookie inside its
        // last `renew_before`, and bounded so a slow store delays no answer past this.
        let renewed = match tokio::time::timeout(RENEWAL_BUDGET, login.renew(token)).await {
            Ok(Ok(r)) => r.map(Arc::<str>::from),
            Ok(Err(e)) => {
                // Not remembered: a store hiccup must not stop the next request renewing.
                tracing::warn!(error = %crate::error_chain(&e), "cookie renewal failed");
                return None;
            }
            Err(_) => {
                tracing::warn!("cookie renewal took too long; the request goes on unrenewed");
                return None;
            }
        };
        self.renewed.insert(jti.clone(), renewed.clone());
        if renewed.is_some() {
            tracing::debug!(user_id = %jwt.subject, "cookie renewed");
        }
        renewed.map(|c| c.to_string())
    }

    fn identity_of(&self, allow: &Allow) -> Arc<Identity> {
        let address = allow
            .principal
            .as_ref()
            .map_or(0, |p| Arc::as_ptr(p) as usize);
        self.rendered
            .get_with((address, allow.snapshot_serial), || {
                Arc::new(Identity::of(allow))
            })
    }
}

/// Who a decision was about, for the log: the subject, "anonymous" for a request without a
/// credential, or "not identified" when it was denied before its credential was checked.
fn subject<'a>(principal: Option<&'a Arc<Principal>>, anonymous: bool) -> Cow<'a, str> {
    match principal {
        Some(p) => p.subject_id(),
        None if anonymous => Cow::Borrowed("anonymous"),
        None => Cow::Borrowed("not identified"),
    }
}

fn log_decision(decision: &Decision, access: &AccessRequest<'_>, decision_id: &str) {
    match decision {
        Decision::Allow(a) => tracing::debug!(
            decision = "allow",
            decision_id,
            method = access.method,
            user_id = %subject(a.principal.as_ref(), true),
            permission = %a.matched_permission,
            policy_version = a.policy_version,
            "request allowed"
        ),
        Decision::Deny(d) => tracing::info!(
            decision = "deny",
            decision_id,
            method = access.method,
            status = d.reason.status().http_code(),
            reason = d.reason.code(),
            user_id = %subject(
                d.principal.as_ref(),
                matches!(d.cause, DenyCause::NoActivity { .. })
            ),
            credential = d.credential().unwrap_or("none"),
            policy_version = d.policy_version,
            detail = %d.cause,
            "request denied"
        ),
    }
}
