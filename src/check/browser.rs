//! What Check does for browsers on hosts configured for login: an anonymous (or expired-cookie)
//! navigation is sent to the login page instead of a 401, and a cookie-authenticated unsafe
//! request must come from one of our own origins (CSRF). The hosts are those the login
//! redirect allow-list accepts; a URL is only ever rebuilt from such a host. Also what of the
//! caller's credential an upstream gets on allow (`forward_credential`). Pure functions over
//! an `AccessRequest`: no protobuf, no I/O.

use url::Url;

use crate::authz::{AccessRequest, CsrfError, Deny, DenyCause, Reason};
pub use crate::authz::{CredentialForwarding, Stripping};
use crate::config::Config;
use crate::identity::credential::{self, Presented, Source};
use crate::login::RedirectPolicy;

/// Methods that change state: a cookie-authenticated one needs an allow-listed origin.
const UNSAFE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// The browser rules of one configuration: present only when `login` is configured.
#[derive(Debug, Clone)]
pub struct BrowserRules {
    redirects: RedirectPolicy,
    /// `{login.public_url}/auth/login`: where the login transaction starts (its cookie is
    /// host-only on the login host, so it must start there).
    login_url: Url,
    cookie_name: String,
    token_header: String,
}

impl BrowserRules {
    /// The rules for `config`; `None` without a `login` section. Errors only on a
    /// `public_url` that validation would have refused.
    pub fn from_config(config: &Config) -> Result<Option<Self>, url::ParseError> {
        let Some(login) = &config.login else {
            return Ok(None);
        };
        let public = Url::parse(&login.public_url)?;
        let login_url = public.join("/auth/login")?;
        Ok(Some(BrowserRules {
            redirects: RedirectPolicy::new(
                &login.redirects,
                login.cookie.domain.as_deref(),
                &public,
            ),
            login_url,
            cookie_name: config.jwt.cookie_name.clone(),
            token_header: config.api_tokens.header.clone(),
        }))
    }

    /// What the request presents; `None` when it is malformed or ambiguous.
    fn presented<'a>(&self, req: &'a AccessRequest<'_>) -> Option<Presented<'a>> {
        credential::extract(
            req.headers.iter().map(|(k, v)| (*k, v.as_ref())),
            &self.cookie_name,
            &self.token_header,
        )
        .ok()
    }

    /// The original URL of a request to an allow-listed host, as the login page's
    /// `redirect_url`: scheme, the host as received and the raw request target. `None` when
    /// the host is not configured for login or the result is not an allowed target.
    pub fn original_url(&self, req: &AccessRequest<'_>) -> Option<String> {
        let host = req.host;
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !host_ok || !req.path.starts_with('/') || req.path.starts_with("//") {
            return None;
        }
        let scheme = match req.scheme {
            "" | "https" => "https",
            "http" => "http",
            _ => return None,
        };
        let raw = format!("{scheme}://{}{}", host.to_ascii_lowercase(), req.path);
        let target = self.redirects.check(&raw).ok()?;
        // The host must survive parsing unchanged: nothing is rebuilt from anything else.
        let parsed = target.url();
        let lower = host.to_ascii_lowercase();
        let same_host = parsed.host_str() == lower.split(':').next();
        same_host.then(|| parsed.to_string())
    }

    /// Where to send a denied browser navigation instead of answering 401: the login page
    /// with the original URL. Only for a navigation that presented nothing, or only a cookie
    /// that is no longer good (expired, revoked), on a host configured for login.
    pub fn login_redirect(&self, deny: &Deny, req: &AccessRequest<'_>) -> Option<String> {
        let eligible = match (deny.reason, &deny.cause) {
            (Reason::MissingCredential, _) => {
                matches!(self.presented(req), Some(Presented::Nothing))
            }
            (Reason::InvalidToken, DenyCause::Token(_) | DenyCause::Revoked(_)) => matches!(
                self.presented(req),
                Some(Presented::Jwt {
                    source: Source::Cookie,
                    ..
                })
            ),
            _ => false,
        };
        if !eligible || !is_navigation(req) {
            return None;
        }
        let original = self.original_url(req)?;
        let mut location = self.login_url.clone();
        location
            .query_pairs_mut()
            .append_pair("redirect_url", &original);
        Some(location.to_string())
    }

    /// The JWT of a request authenticated by our cookie alone.
    pub fn cookie_token<'a>(&self, req: &'a AccessRequest<'_>) -> Option<&'a str> {
        match self.presented(req) {
            Some(Presented::Jwt {
                token,
                source: Source::Cookie,
            }) => Some(token),
            _ => None,
        }
    }

    /// Whether the request is authenticated by our cookie alone (the browser adds it on its
    /// own, also to cross-site requests).
    pub fn is_cookie_authenticated(&self, req: &AccessRequest<'_>) -> bool {
        matches!(
            self.presented(req),
            Some(Presented::Jwt {
                source: Source::Cookie,
                ..
            })
        )
    }

    /// CSRF: a cookie-authenticated unsafe request must carry an `Origin` (or, without one, a
    /// `Referer`) on the allow-list. Safe methods, Bearer and API-token requests pass.
    pub fn csrf(&self, req: &AccessRequest<'_>) -> Result<(), CsrfError> {
        let method = req.method.to_ascii_uppercase();
        if !UNSAFE_METHODS.contains(&method.as_str()) || !self.is_cookie_authenticated(req) {
            return Ok(());
        }
        let source = match single(req, "origin")? {
            // `Origin: null` (sandboxed frames, some redirects) is no origin of ours.
            Some(origin) => origin,
            None => single(req, "referer")?.ok_or(CsrfError::MissingOrigin)?,
        };
        self.redirects
            .allowed_origin(source)
            .map(|_| ())
            .ok_or(CsrfError::ForeignOrigin)
    }
}

/// The one value of header `name`; two are refused.
fn single<'r>(req: &'r AccessRequest<'_>, name: &str) -> Result<Option<&'r str>, CsrfError> {
    let mut values = req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref());
    let first = values.next();
    if values.next().is_some() {
        return Err(CsrfError::AmbiguousOrigin);
    }
    Ok(first)
}

fn header<'r>(req: &'r AccessRequest<'_>, name: &str) -> Option<&'r str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

/// A browser navigating: GET or HEAD, `Accept` preferring `text/html`, not `fetch`/XHR
/// (`X-Requested-With`, a `Sec-Fetch-Mode` other than `navigate`), not gRPC or gRPC-web.
pub fn is_navigation(req: &AccessRequest<'_>) -> bool {
    if !matches!(req.method, "GET" | "HEAD") {
        return false;
    }
    if header(req, "x-requested-with").is_some() || header(req, "x-grpc-web").is_some() {
        return false;
    }
    if header(req, "content-type").is_some_and(|t| {
        t.trim_start()
            .get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
    }) {
        return false;
    }
    if header(req, "sec-fetch-mode").is_some_and(|m| !m.trim().eq_ignore_ascii_case("navigate")) {
        return false;
    }
    header(req, "accept").is_some_and(accept_prefers_html)
}

/// `text/html` is named with a weight no other media range beats. `*/*` alone is not a
/// preference for HTML.
pub fn accept_prefers_html(accept: &str) -> bool {
    let mut html: Option<f32> = None;
    let mut best_other: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let mut q = 1.0_f32;
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
        }
        if media == "text/html" {
            html = Some(html.map_or(q, |h| h.max(q)));
        } else {
            best_other = best_other.max(q);
        }
    }
    html.is_some_and(|h| h > 0.0 && h >= best_other)
}

/// `forward_credential` of a configuration, with the cookie and header credentials come in.
pub fn credential_forwarding(config: &Config) -> CredentialForwarding {
    CredentialForwarding::new(
        config.forward_credential.clone(),
        &config.jwt.cookie_name,
        &config.api_tokens.header,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_table() {
        let cases = [
            ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", true),
            ("text/html", true),
            ("TEXT/HTML; charset=utf-8", true),
            ("*/*", false),
            ("", false),
            ("application/json", false),
            ("application/json, text/html;q=0.5", false),
            ("text/html;q=0", false),
            ("text/html;q=0.9, */*;q=0.9", true),
            ("text/*", false),
            ("application/json, text/plain, */*", false),
        ];
        for (accept, expected) in cases {
            assert_eq!(accept_prefers_html(accept), expected, "{accept:?}");
        }
    }
}
