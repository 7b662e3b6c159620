//! Where a browser may be sent after login or logout: only to an allow-listed target, parsed
//! once with a real URL parser and compared on the parsed origin. Exact origins, or domains
//! matched on a dot boundary over https on the default port. Anything a browser could read
//! differently in the raw text (whitespace, controls, backslashes, malformed escapes, and their
//! encodings in the authority) is refused before parsing, userinfo after; percent-encoded
//! characters in the path, query and fragment belong to the app and pass.

use url::{Host, Url};

use crate::config::{is_loopback, RedirectConfig};

/// Longest accepted target.
pub const MAX_TARGET_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("the redirect target is empty or too long")]
    Length,
    #[error("the redirect target contains whitespace, control characters or backslashes")]
    ForbiddenCharacter,
    #[error("the redirect target is not an absolute URL")]
    NotAbsolute,
    #[error("the redirect target's scheme is not https")]
    Scheme,
    #[error("the redirect target carries user information")]
    UserInfo,
    #[error("the redirect target is not on the allow-list")]
    NotAllowed,
}

/// Where a checked target is, relative to the cookie domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Under the cookie domain: the cookie reaches it.
    UnderCookieDomain(Url),
    /// An allow-listed app elsewhere: it gets a one-time code for its origin.
    Elsewhere { url: Url, origin: String },
}

impl Target {
    pub fn url(&self) -> &Url {
        match self {
            Target::UnderCookieDomain(u) | Target::Elsewhere { url: u, .. } => u,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedirectPolicy {
    origins: Vec<String>,
    /// Each domain with its explicit port (`None`: the default port only).
    domains: Vec<(String, Option<u16>)>,
    cookie_domain: Option<String>,
    /// The origin portcullis itself is reached at: with no cookie domain, the host-only
    /// cookie reaches only it. Not trusted for being ours: it must be listed.
    own_origin: String,
}

/// `host` is `domain` or a subdomain of it (dot boundary).
fn under(host: &str, domain: &str) -> bool {
    host == domain
        || (host.len() > domain.len()
            && host.ends_with(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// A `redirects.domains` entry as its domain and explicit port: `example.com:10443` admits
/// that port only, `example.com` (or `example.com:443`) the default https port only.
pub fn split_port(entry: &str) -> (String, Option<u16>) {
    match entry.rsplit_once(':') {
        Some((domain, port)) => match port.parse::<u16>() {
            Ok(443) => (domain.to_owned(), None),
            Ok(p) => (domain.to_owned(), Some(p)),
            Err(_) => (entry.to_owned(), None),
        },
        None => (entry.to_owned(), None),
    }
}

/// Refuses, anywhere in the raw text, whitespace, controls, backslashes, non-ASCII and
/// malformed `%` escapes: what a browser might read differently from a URL parser. In the
/// scheme and authority the percent-decoded text is held to the same rule (with UTF-8 encoded
/// C1 controls and U+2028/U+2029): that is where a browser decides where it goes. The path,
/// query and fragment belong to the app: percent-encoded characters there (`%20` in a search)
/// are its own business and pass unchanged.
fn raw_text_is_clean(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.iter().any(|&b| b <= 0x20 || b >= 0x7f || b == b'\\') {
        return false;
    }
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return false;
    }
    let after_scheme = raw.find("://").map_or(0, |i| i + 3);
    let end = raw[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| after_scheme + i);
    let decoded: Vec<u8> = percent_encoding::percent_decode(&bytes[..end]).collect();
    if decoded
        .iter()
        .any(|&b| b <= 0x20 || b == 0x7f || b == b'\\')
    {
        return false;
    }
    match std::str::from_utf8(&decoded) {
        Ok(text) => !text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\u{2028}' || c == '\u{2029}'),
        Err(_) => false,
    }
}

impl RedirectPolicy {
    pub fn new(config: &RedirectConfig, cookie_domain: Option<&str>, public_url: &Url) -> Self {
        RedirectPolicy {
            origins: config.origins.clone(),
            domains: config.domains.iter().map(|d| split_port(d)).collect(),
            cookie_domain: cookie_domain.map(str::to_owned),
            own_origin: public_url.origin().ascii_serialization(),
        }
    }

    /// Checks a raw target and says where it is.
    pub fn check(&self, raw: &str) -> Result<Target, RedirectError> {
        if raw.is_empty() || raw.len() > MAX_TARGET_LEN {
            return Err(RedirectError::Length);
        }
        if !raw_text_is_clean(raw) {
            return Err(RedirectError::ForbiddenCharacter);
        }
        let url = Url::parse(raw).map_err(|_| RedirectError::NotAbsolute)?;
        // The scheme as written must be lower-case https/http: `HTTPS:` is refused rather than
        // trusted to be normalized the same way by every browser.
        let written_scheme = raw.split(':').next().unwrap_or_default();
        if !matches!(written_scheme, "https" | "http") {
            return Err(RedirectError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RedirectError::UserInfo);
        }
        let origin = url.origin().ascii_serialization();
        // The login host itself is trusted only where it is listed, like any other.
        let exact = self.origins.contains(&origin);
        match url.scheme() {
            "https" => {}
            "http" if exact && is_loopback(&url) => {}
            _ => return Err(RedirectError::Scheme),
        }
        let by_domain = match url.host() {
            Some(Host::Domain(host)) => {
                let port = url.port();
                self.domains
                    .iter()
                    .any(|(d, p)| *p == port && under(host, d))
            }
            _ => false,
        };
        if !(exact || by_domain) {
            return Err(RedirectError::NotAllowed);
        }
        let under_cookie = match (&self.cookie_domain, url.host()) {
            (Some(cd), Some(Host::Domain(host))) => under(host, cd),
            (None, _) => origin == self.own_origin,
            _ => false,
        };
        Ok(if under_cookie {
            Target::UnderCookieDomain(url)
        } else {
            Target::Elsewhere { url, origin }
        })
    }

    /// The origin of a checked URL if it is an allow-listed origin (for `redirect_uri` in a
    /// code exchange, and `Origin` on logout).
    pub fn allowed_origin(&self, raw: &str) -> Option<String> {
        self.check(raw)
            .ok()
            .map(|t| t.url().origin().ascii_serialization())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        let config = RedirectConfig {
            origins: vec![
                "https://partner.example.net".to_owned(),
                "http://127.0.0.1:8080".to_owned(),
            ],
            domains: vec!["example.com".to_owned()],
            default: "https://app.example.com/".to_owned(),
        };
        let public = Url::parse("https://auth.example.com").expect("url");
        RedirectPolicy::new(&config, Some("example.com"), &public)
    }

    #[test]
    fn open_redirect_table() {
        use RedirectError::*;
        let p = policy();
        let allowed = [
            "https://app.example.com/",
            "https://app.example.com/dashboard?tab=1#top",
            "https://example.com/",
            "https://deep.sub.example.com/x",
            "https://APP.Example.COM/x",
            "https://partner.example.net/cb",
            "https://partner.example.net:443/cb",
            "http://127.0.0.1:8080/after",
            // Percent-encoded characters in the path, query and fragment belong to the app.
            "https://app.example.com/search?q=a%20b",
            "https://app.example.com/search?q=a+b&x=%26%3D#r%C3%A9sum%C3%A9",
            "https://app.example.com/a%2Fb/%5c/%00/%0d%0a/%09/%C2%85/%E2%80%A8/%ff",
        ];
        for raw in allowed {
            assert!(
                p.check(raw).is_ok(),
                "{raw} should be allowed: {:?}",
                p.check(raw)
            );
        }
        let refused: &[(&str, RedirectError)] = &[
            ("", Length),
            ("//evil.com", NotAbsolute),
            ("//evil.com/path", NotAbsolute),
            ("/\\evil.com", ForbiddenCharacter),
            ("\\\\evil.com", ForbiddenCharacter),
            ("/path/only", NotAbsolute),
            ("evil.com", NotAbsolute),
            ("https://example.com.evil.com/", NotAllowed),
            ("https://evil-example.com/", NotAllowed),
            ("https://evilexample.com/", NotAllowed),
            ("https://example.com@evil.com/", UserInfo),
            ("https://user:pass@app.example.com/", UserInfo),
            ("https://app.example.com@evil.com", UserInfo),
            ("https://evil.com#@app.example.com", NotAllowed),
            ("https://evil.com?@app.example.com", NotAllowed),
            ("https://evil.com\\@app.example.com", ForbiddenCharacter),
            ("https://app.example.com\\.evil.com", ForbiddenCharacter),
            ("https:/\\evil.com", ForbiddenCharacter),
            ("https:evil.com", NotAllowed),
            ("https:///evil.com", NotAllowed),
            (" https://app.example.com/", ForbiddenCharacter),
            ("https://app.example.com/ x", ForbiddenCharacter),
            ("https://app.example.com/\tx", ForbiddenCharacter),
            ("https://app.example.com/%zz", ForbiddenCharacter),
            ("https://app.example.com/%2", ForbiddenCharacter),
            ("https://app.example.com/?q=%", ForbiddenCharacter),
            ("https://app.example.com%09.evil.com/", ForbiddenCharacter),
            ("https://app.example.com%0d%0a/", ForbiddenCharacter),
            ("https://app.example.com%5c.evil.com/", ForbiddenCharacter),
            ("https://app.example.com%00.evil.com/", ForbiddenCharacter),
            ("https://app%2eexample.com%C2%85/", ForbiddenCharacter),
            ("https://app.example.com%2f@evil.com/", UserInfo),
            ("https://app.example.com%40evil.com/", NotAbsolute),
            ("javascript:alert(1)", Scheme),
            ("JaVaScRiPt:alert(1)", Scheme),
            ("javascript://app.example.com/%0aalert(1)", Scheme),
            ("javascript://app.example.com/", Scheme),
            ("data:text/html,<script>alert(1)</script>", Scheme),
            ("vbscript:msgbox(1)", Scheme),
            ("HTTPS://app.example.com/", Scheme),
            ("Https://app.example.com/", Scheme),
            ("http://app.example.com/", Scheme),
            ("ftp://app.example.com/", Scheme),
            ("https://app.example.com:8443/", NotAllowed),
            ("https://app.example.com:443@evil.com/", UserInfo),
            ("https://partner.example.net:8443/", NotAllowed),
            ("http://127.0.0.1:8081/", Scheme),
            ("http://127.0.0.1/", Scheme),
            ("http://localhost:8080/", Scheme),
            ("https://127.0.0.1:8080/", NotAllowed),
            ("https://xn--exmple-cua.com/", NotAllowed),
            ("https://exämple.com/", ForbiddenCharacter),
            ("https://app.exаmple.com/", ForbiddenCharacter),
            ("https://app.example.com。evil.com/", ForbiddenCharacter),
            ("https://[::1]/", NotAllowed),
            ("https://0x7f.0.0.1/", NotAllowed),
            ("https://app.example.com.", NotAllowed),
            ("https://sub.partner.example.net/", NotAllowed),
        ];
        for (raw, expected) in refused {
            assert_eq!(p.check(raw).map(|_| ()), Err(*expected), "{raw:?}");
        }
        assert!(allowed.len() + refused.len() >= 40);
    }

    #[test]
    fn cookie_domain_decides_between_cookie_and_code() {
        let p = policy();
        assert!(matches!(
            p.check("https://app.example.com/x"),
            Ok(Target::UnderCookieDomain(_))
        ));
        match p.check("https://partner.example.net/cb") {
            Ok(Target::Elsewhere { origin, .. }) => {
                assert_eq!(origin, "https://partner.example.net");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 21, item 3: with apps listed one by one, a sibling host under the cookie domain
    /// and the login host itself are not trusted unless listed.
    #[test]
    fn only_listed_apps_are_trusted_not_their_siblings_nor_the_login_host() {
        let config = RedirectConfig {
            origins: vec![
                "https://app1.example.com".to_owned(),
                "https://app2.example.com".to_owned(),
            ],
            domains: Vec::new(),
            default: "https://app1.example.com/".to_owned(),
        };
        let public = Url::parse("https://auth.example.com").expect("url");
        let p = RedirectPolicy::new(&config, Some("example.com"), &public);
        assert!(matches!(
            p.check("https://app2.example.com/x"),
            Ok(Target::UnderCookieDomain(_))
        ));
        assert_eq!(
            p.allowed_origin("https://app1.example.com"),
            Some("https://app1.example.com".to_owned())
        );
        for other in [
            "https://evil.example.com/",
            "https://example.com/",
            "https://auth.example.com/",
        ] {
            assert_eq!(
                p.check(other).map(|_| ()),
                Err(RedirectError::NotAllowed),
                "{other}"
            );
            assert_eq!(p.allowed_origin(other), None, "{other}");
        }
        let mut listed = config.clone();
        listed.origins.push("https://auth.example.com".to_owned());
        let p = RedirectPolicy::new(&listed, Some("example.com"), &public);
        assert!(p.check("https://auth.example.com/").is_ok());
    }

    /// Issue 21, item 2: a `host:port` entry admits that port (and only it), as
    /// oauth2-proxy's whitelist does; a bare entry stays on the default port.
    #[test]
    fn domain_entries_with_a_port_admit_that_port_only() {
        let config = RedirectConfig {
            origins: Vec::new(),
            domains: vec![
                "app1.example.com:10443".to_owned(),
                "app2.example.com".to_owned(),
            ],
            default: "https://app1.example.com:10443/".to_owned(),
        };
        let public = Url::parse("https://login.example.com:10443").expect("url");
        let p = RedirectPolicy::new(&config, Some("example.com"), &public);
        for ok in [
            "https://app1.example.com:10443/x",
            "https://app2.example.com/x",
            "https://app2.example.com:443/x",
        ] {
            assert!(p.check(ok).is_ok(), "{ok}: {:?}", p.check(ok));
        }
        for refused in [
            "https://app1.example.com/x",
            "https://app1.example.com:10444/x",
            "https://app2.example.com:10443/x",
            "https://evil.example.com:10443/x",
            "https://app1.example.com.evil.com:10443/x",
        ] {
            assert_eq!(
                p.check(refused).map(|_| ()),
                Err(RedirectError::NotAllowed),
                "{refused}"
            );
        }
        assert_eq!(
            split_port("a.example.com:443"),
            ("a.example.com".to_owned(), None)
        );
    }

    #[test]
    fn domains_match_on_a_dot_boundary_only() {
        assert!(under("a.example.com", "example.com"));
        assert!(under("example.com", "example.com"));
        assert!(!under("aexample.com", "example.com"));
        assert!(!under("example.com.evil.com", "example.com"));
        assert!(!under("com", "example.com"));
    }
}
