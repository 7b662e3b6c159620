//! Finds the one credential a request presents: `Authorization: Bearer <jwt>`, the SSO cookie,
//! or an API token (`Authorization: Bearer pcs_…` or the API-token header). Anything that could
//! be read two ways (two Authorization headers, a comma inside one, two cookies of our name, a
//! header and a different cookie, an API token together with a JWT or twice) is refused.

/// What a request presents, borrowed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Nothing,
    Jwt { token: &'a str, source: Source },
    ApiToken { token: &'a str, source: Source },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer`
    Header,
    Cookie,
    /// The dedicated API-token header (`x-api-token` by default).
    TokenHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    #[error("the Authorization scheme is not Bearer")]
    UnsupportedScheme,
    #[error("the Authorization header is malformed")]
    MalformedAuthorization,
    #[error("the API token header is empty or malformed")]
    MalformedApiTokenHeader,
    #[error("more than one credential cookie")]
    DuplicateCookie,
    #[error("the credential cookie is empty or malformed")]
    MalformedCookie,
    #[error("the Authorization header and the cookie carry different tokens")]
    ConflictingCredentials,
    #[error("more than one API token")]
    DuplicateApiToken,
    #[error("an API token and a JWT together")]
    ApiTokenWithJwt,
}

impl CredentialError {
    /// Two credentials where one is expected (as opposed to one that is malformed).
    pub fn is_ambiguous(self) -> bool {
        matches!(
            self,
            CredentialError::DuplicateAuthorization
                | CredentialError::DuplicateCookie
                | CredentialError::ConflictingCredentials
                | CredentialError::DuplicateApiToken
                | CredentialError::ApiTokenWithJwt
        )
    }
}

/// Extracts the credential from `(lower-case name, value)` header pairs.
pub fn extract<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    cookie_name: &str,
    token_header: &str,
) -> Result<Presented<'a>, CredentialError> {
    let mut bearer: Option<&'a str> = None;
    let mut cookie: Option<&'a str> = None;
    let mut api_header: Option<&'a str> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(token_header) {
            if api_header.is_some() || value.contains(',') {
                return Err(CredentialError::DuplicateApiToken);
            }
            let value = value.trim();
            if !token_chars(value) {
                return Err(CredentialError::MalformedApiTokenHeader);
            }
            api_header = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            if bearer.is_some() {
                return Err(CredentialError::DuplicateAuthorization);
            }
            bearer = Some(parse_bearer(value)?);
        } else if name.eq_ignore_ascii_case("cookie") {
            // Crumbs may be split over several headers or joined with ',' by a proxy.
            for pair in value.split([';', ',']) {
                let Some((k, v)) = pair.trim().split_once('=') else {
                    continue;
                };
                if k.trim() != cookie_name {
                    continue;
                }
                if cookie.is_some() {
                    return Err(CredentialError::DuplicateCookie);
                }
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or(v);
                if !token_chars(v) {
                    return Err(CredentialError::MalformedCookie);
                }
                cookie = Some(v);
            }
        }
    }
    let bearer_api = bearer.filter(|b| super::api_token::has_prefix(b));
    match (bearer_api, api_header) {
        (Some(_), Some(_)) => return Err(CredentialError::DuplicateApiToken),
        (Some(token), None) | (None, Some(token)) => {
            if cookie.is_some() || (bearer.is_some() && bearer_api.is_none()) {
                return Err(CredentialError::ApiTokenWithJwt);
            }
            let source = if bearer_api.is_some() {
                Source::Header
            } else {
                Source::TokenHeader
            };
            return Ok(Presented::ApiToken { token, source });
        }
        (None, None) => {}
    }
    match (bearer, cookie) {
        (Some(b), Some(c)) if b != c => Err(CredentialError::ConflictingCredentials),
        (Some(token), _) => Ok(Presented::Jwt {
            token,
            source: Source::Header,
        }),
        (None, Some(token)) => Ok(Presented::Jwt {
            token,
            source: Source::Cookie,
        }),
        (None, None) => Ok(Presented::Nothing),
    }
}

fn parse_bearer(value: &str) -> Result<&str, CredentialError> {
    let value = value.trim();
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or(if value.eq_ignore_ascii_case("bearer") {
            CredentialError::MalformedAuthorization
        } else {
            CredentialError::UnsupportedScheme
        })?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::UnsupportedScheme);
    }
    let token = rest.trim_start_matches(' ');
    // A comma means two headers were joined: which one would the upstream see?
    if token.contains(',') {
        return Err(CredentialError::DuplicateAuthorization);
    }
    if !token_chars(token) {
        return Err(CredentialError::MalformedAuthorization);
    }
    Ok(token)
}

/// RFC 6750 b64token characters, non-empty and bounded.
fn token_chars(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= super::verify::MAX_TOKEN_LEN
        && token.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CredentialError::*;

    fn run(
        headers: &[(&'static str, &'static str)],
    ) -> Result<Presented<'static>, CredentialError> {
        extract(headers.iter().copied(), "jwt-token", "x-api-token")
    }

    type Case = (
        &'static [(&'static str, &'static str)],
        Result<Presented<'static>, CredentialError>,
    );

    #[test]
    fn credential_table() {
        let jwt = |token, source| Ok(Presented::Jwt { token, source });
        let api = |token, source| Ok(Presented::ApiToken { token, source });
        let cases: &[Case] = &[
            (&[], Ok(Presented::Nothing)),
            (&[("accept", "*/*")], Ok(Presented::Nothing)),
            (
                &[("authorization", "Bearer a.b.c")],
                jwt("a.b.c", Source::Header),
            ),
            (
                &[("authorization", "bearer a.b.c")],
                jwt("a.b.c", Source::Header),
            ),
            (
                &[("cookie", "theme=dark; jwt-token=a.b.c")],
                jwt("a.b.c", Source::Cookie),
            ),
            (
                &[("cookie", "jwt-token=\"a.b.c\"")],
                jwt("a.b.c", Source::Cookie),
            ),
            (&[("cookie", "xjwt-token=a.b.c")], Ok(Presented::Nothing)),
            // the same token in both places is not ambiguous
            (
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("cookie", "jwt-token=a.b.c"),
                ],
                jwt("a.b.c", Source::Header),
            ),
            // ambiguity is refused (CVE-2021-32777, CVE-2020-25017)
            (
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer d.e.f"),
                ],
                Err(DuplicateAuthorization),
            ),
            (
                &[("authorization", "Bearer a.b.c,Bearer d.e.f")],
                Err(DuplicateAuthorization),
            ),
            (
                &[("cookie", "jwt-token=a.b.c; jwt-token=d.e.f")],
                Err(DuplicateCookie),
            ),
            (
                &[("cookie", "jwt-token=a.b.c"), ("cookie", "jwt-token=d.e.f")],
                Err(DuplicateCookie),
            ),
            (
                &[("cookie", "jwt-token=a.b.c, jwt-token=d.e.f")],
                Err(DuplicateCookie),
            ),
            (
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("cookie", "jwt-token=d.e.f"),
                ],
                Err(ConflictingCredentials),
            ),
            // only Bearer
            (
                &[("authorization", "Basic dXNlcjpwYXNz")],
                Err(UnsupportedScheme),
            ),
            (&[("authorization", "Token abc")], Err(UnsupportedScheme)),
            (&[("authorization", "a.b.c")], Err(UnsupportedScheme)),
            (&[("authorization", "Bearer")], Err(MalformedAuthorization)),
            (&[("authorization", "Bearer ")], Err(MalformedAuthorization)),
            (
                &[("authorization", "Bearer a.b.c d")],
                Err(MalformedAuthorization),
            ),
            (
                &[("authorization", "Bearer a\u{1}b")],
                Err(MalformedAuthorization),
            ),
            (&[("cookie", "jwt-token=")], Err(MalformedCookie)),
            // API tokens, told apart from JWTs by their prefix
            (
                &[("authorization", "Bearer pcs_abc")],
                api("pcs_abc", Source::Header),
            ),
            (
                &[("x-api-token", "pcs_abc")],
                api("pcs_abc", Source::TokenHeader),
            ),
            (
                &[("x-api-token", " pcs_abc ")],
                api("pcs_abc", Source::TokenHeader),
            ),
            (
                &[
                    ("authorization", "Bearer pcs_abc"),
                    ("x-api-token", "pcs_abc"),
                ],
                Err(DuplicateApiToken),
            ),
            (
                &[("x-api-token", "pcs_abc"), ("x-api-token", "pcs_def")],
                Err(DuplicateApiToken),
            ),
            (
                &[("x-api-token", "pcs_abc,pcs_def")],
                Err(DuplicateApiToken),
            ),
            (
                &[
                    ("x-api-token", "pcs_abc"),
                    ("authorization", "Bearer a.b.c"),
                ],
                Err(ApiTokenWithJwt),
            ),
            (
                &[("x-api-token", "pcs_abc"), ("cookie", "jwt-token=a.b.c")],
                Err(ApiTokenWithJwt),
            ),
            (
                &[
                    ("authorization", "Bearer pcs_abc"),
                    ("cookie", "jwt-token=a.b.c"),
                ],
                Err(ApiTokenWithJwt),
            ),
            (&[("x-api-token", "")], Err(MalformedApiTokenHeader)),
        ];
        for (headers, expected) in cases {
            assert_eq!(run(headers), *expected, "{headers:?}");
        }
    }

    #[test]
    fn cookie_name_is_configurable() {
        let got = extract(
            [("cookie", "sso=a.b.c; jwt-token=x.y.z")],
            "sso",
            "x-api-token",
        );
        assert_eq!(
            got,
            Ok(Presented::Jwt {
                token: "a.b.c",
                source: Source::Cookie
            })
        );
    }
}
