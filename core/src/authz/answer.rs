//! What a decision tells Envoy, independent of how it is carried (an ext_authz
//! `CheckResponse`, or the in-process filter's own header calls): an allow's identity headers
//! (set with overwrite semantics), the client's own `x-auth-*` headers to remove, the
//! credential taken out (`forward_credential`), and a deny's status, headers and JSON body.
//! Both modes build their answer from these functions, so they cannot drift apart.

use cookie::Cookie;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{AccessRequest, Allow, Deny, Reason};
use crate::identity::credential::{self, Presented, Source};
use crate::policy::path::normalize_host;

/// Prefix of every identity header portcullis sets; client copies are always removed.
pub const IDENTITY_HEADER_PREFIX: &str = "x-auth-";

/// The header carrying the decision id, on allows and denies.
pub const DECISION_ID_HEADER: &str = "x-auth-decision-id";

/// Bytes escaped in header values: controls, `%` itself and (implicitly) all non-ASCII.
const HEADER_VALUE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Header-safe text: non-ASCII and control bytes percent-encoded (UTF-8), `%` too.
pub fn header_safe(value: &str) -> String {
    utf8_percent_encode(value, HEADER_VALUE_ESCAPES).to_string()
}

/// The identity facts of an allow, as (header, value) pairs, in the order they are set.
pub fn identity_facts(allow: &Allow) -> Vec<(&'static str, String)> {
    let mut facts = Vec::with_capacity(8);
    if let Some(p) = &allow.principal {
        facts.push(("x-auth-user-id", header_safe(&p.subject_id())));
        if let Some(email) = p.email() {
            facts.push(("x-auth-email", header_safe(email)));
        }
        if let Some(name) = p.name() {
            facts.push(("x-auth-name", header_safe(name)));
        }
        facts.push(("x-auth-subject-type", p.subject_type().as_str().to_owned()));
        facts.push(("x-auth-roles", header_safe(&allow.roles.join(","))));
        facts.push(("x-auth-credential", p.credential().as_str().to_owned()));
        if let Some(jti) = p.token_id() {
            facts.push(("x-auth-token-id", header_safe(jti)));
        }
    } else {
        facts.push(("x-auth-subject-type", "anonymous".to_owned()));
    }
    facts.push(("x-auth-permissions", allow.permissions.join(",")));
    facts
}

/// The client's own headers to remove from an allowed request (lower-case, sorted, once
/// each): every `x-auth-*` header the allow does not overwrite (`set` names the identity
/// headers it sets; the decision id is always set), and what `stripping` takes out.
pub fn headers_to_remove(
    request: &AccessRequest<'_>,
    set: &[&str],
    stripping: &Stripping,
) -> Vec<String> {
    let mut remove: Vec<String> = request
        .headers
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| {
            // Bytes, not a str slice: a non-ASCII name must not panic on a char boundary.
            k.as_bytes()
                .get(..IDENTITY_HEADER_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(IDENTITY_HEADER_PREFIX.as_bytes()))
        })
        .filter(|k| {
            !DECISION_ID_HEADER.eq_ignore_ascii_case(k)
                && !set.iter().any(|name| name.eq_ignore_ascii_case(k))
        })
        .map(str::to_ascii_lowercase)
        .collect();
    remove.extend(stripping.remove.iter().cloned());
    remove.sort_unstable();
    remove.dedup();
    remove
}

/// A deny as the client receives it: the HTTP status, the headers (content type, the Bearer
/// challenge on a 401, the decision id) and the JSON body.
pub fn deny_answer(deny: &Deny, decision_id: &str) -> (u16, Vec<(&'static str, String)>, String) {
    let status = deny.reason.status();
    let body = serde_json::json!({
        "error": status.error(),
        "reason": deny.reason.code(),
        "decision_id": decision_id,
    })
    .to_string();
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if status == super::DenyStatus::Unauthenticated {
        let challenge = match deny.reason {
            Reason::InvalidToken => r#"Bearer realm="portcullis", error="invalid_token""#,
            Reason::AmbiguousCredential => r#"Bearer realm="portcullis", error="invalid_request""#,
            _ => r#"Bearer realm="portcullis""#,
        };
        headers.push(("www-authenticate", challenge.to_owned()));
    }
    headers.push((DECISION_ID_HEADER, decision_id.to_owned()));
    (status.http_code(), headers, body)
}

/// `forward_credential`: `default` for every upstream, or only for some hosts (lower-case,
/// without port) or some permissions (the one that allowed the request), for services that
/// relay the token on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardCredentialConfig {
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// What to take out of an allowed request before Envoy forwards it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stripping {
    /// Headers to remove (lower-case).
    pub remove: Vec<String>,
    /// The `Cookie` header to send instead (the others kept); `None`: leave it.
    pub cookie: Option<String>,
}

/// `forward_credential`: by default the caller's credential stops at the gate.
#[derive(Debug, Clone)]
pub struct CredentialForwarding {
    config: ForwardCredentialConfig,
    cookie_name: String,
    token_header: String,
}

impl CredentialForwarding {
    /// The rules, with the JWT cookie's name and the API-token header credentials come in.
    pub fn new(config: ForwardCredentialConfig, cookie_name: &str, token_header: &str) -> Self {
        CredentialForwarding {
            config,
            cookie_name: cookie_name.to_owned(),
            token_header: token_header.to_ascii_lowercase(),
        }
    }

    /// The request headers a credential can arrive in (lower-case): `authorization`, `cookie`
    /// and the API-token header. What the upstream receives of each is the answer's to say.
    pub fn credential_headers(&self) -> [&str; 3] {
        ["authorization", "cookie", &self.token_header]
    }

    /// Whether the upstream of this allowed request receives the credential as sent.
    pub fn forwards(&self, host: &str, allow: &Allow) -> bool {
        let host = normalize_host(host);
        self.config.default
            || self.config.hosts.iter().any(|h| *h == host)
            || self.config.permissions.contains(&allow.matched_permission)
    }

    /// What to strip from an allowed request: the `Authorization` header when it carried our
    /// JWT or API token, the API-token header, and our cookie (the other cookies kept).
    pub fn stripping(&self, req: &AccessRequest<'_>, allow: &Allow) -> Stripping {
        let mut out = Stripping::default();
        if allow.principal.is_none() || self.forwards(req.host, allow) {
            return out;
        }
        let presented = credential::extract(
            req.headers.iter().map(|(k, v)| (*k, v.as_ref())),
            &self.cookie_name,
            &self.token_header,
        );
        let Ok(presented) = presented else {
            return out;
        };
        let bearer = matches!(
            presented,
            Presented::Jwt {
                source: Source::Header,
                ..
            } | Presented::ApiToken {
                source: Source::Header,
                ..
            }
        );
        if bearer {
            out.remove.push("authorization".to_owned());
        }
        if matches!(
            presented,
            Presented::ApiToken {
                source: Source::TokenHeader,
                ..
            }
        ) {
            out.remove.push(self.token_header.clone());
        }
        let mut found = false;
        let mut kept: Vec<String> = Vec::new();
        for (_, value) in req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        {
            for c in Cookie::split_parse(value.as_ref()) {
                match c {
                    Ok(c) if c.name() == self.cookie_name => found = true,
                    Ok(c) => kept.push(format!("{}={}", c.name(), c.value())),
                    // A crumb without a name or `=` is dropped: no server could read it either.
                    Err(_) => {}
                }
            }
        }
        if found {
            if kept.is_empty() {
                out.remove.push("cookie".to_owned());
            } else {
                out.cookie = Some(kept.join("; "));
            }
        }
        out
    }
}
