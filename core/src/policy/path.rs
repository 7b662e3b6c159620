//! Request-target canonicalization: the path that is authorized must be the path the upstream
//! receives. The query is split off at the first `?` and never matched; anything that a
//! normalizer would change, or that two parsers could read differently, is rejected outright.

use std::borrow::Cow;

/// Why a request target was refused. Every variant becomes a 403 `invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request has no path")]
    Missing,
    #[error("the path does not start with '/'")]
    NotOriginForm,
    #[error("the path contains a fragment")]
    Fragment,
    #[error("the path contains a matrix parameter ';'")]
    MatrixParameter,
    #[error("the path contains an empty segment ('//')")]
    EmptySegment,
    #[error("the path contains a dot segment")]
    DotSegment,
    #[error("the path contains a backslash")]
    Backslash,
    #[error("the path contains a control, space or non-ASCII byte")]
    ForbiddenByte,
    #[error("the path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("the path contains a malformed percent escape")]
    BadEscape,
    #[error("the path contains an encoded character that changes its meaning")]
    AmbiguousEscape,
    #[error("the path contains an encoded unreserved character")]
    NonCanonicalEscape,
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
}

/// Longest path accepted; longer ones are refused rather than matched.
pub const MAX_PATH_LEN: usize = 8192;

/// Returns the canonical path of a raw request target (`path[?query]`): the query removed and
/// percent escapes decoded. Borrowed when the path had no escapes.
pub fn canonicalize(target: &str) -> Result<Cow<'_, str>, PathError> {
    if target.is_empty() {
        return Err(PathError::Missing);
    }
    // Split on the first '?' only; the query never takes part in the match.
    let path = match target.find('?') {
        Some(i) => &target[..i],
        None => target,
    };
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut has_escape = false;
    for &b in bytes {
        match b {
            b'#' => return Err(PathError::Fragment),
            b';' => return Err(PathError::MatrixParameter),
            b'\\' => return Err(PathError::Backslash),
            b'%' => has_escape = true,
            0x21..=0x7e => {}
            _ => return Err(PathError::ForbiddenByte),
        }
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        // An empty segment is legal only at the very end: "/a/" is a distinct path, "/a//b" is not.
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
        check_segment(segment)?;
    }
    if !has_escape {
        return Ok(Cow::Borrowed(path));
    }
    decode(path).map(Cow::Owned)
}

fn check_segment(segment: &str) -> Result<(), PathError> {
    if segment == "." || segment == ".." {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hi = bytes.get(i + 1).and_then(|c| hex(*c));
        let lo = bytes.get(i + 2).and_then(|c| hex(*c));
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadEscape);
        };
        let decoded = hi << 4 | lo;
        match decoded {
            // Structure-changing characters and a second round of encoding.
            b'/' | b'\\' | b'%' | b'?' | b'#' | b';' => return Err(PathError::AmbiguousEscape),
            0x00..=0x1f | 0x7f => return Err(PathError::ForbiddenByte),
            // RFC 3986 §6.2.2.2: a normalizer decodes these, so the upstream may see them decoded.
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                return Err(PathError::NonCanonicalEscape)
            }
            _ => out.push(decoded),
        }
        i += 3;
    }
    let decoded = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    // C1 controls (U+0080..U+009F, e.g. NEL U+0085) are control characters too, only encoded
    // in two bytes: refused like their one-byte siblings (found by fuzzing).
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ForbiddenByte);
    }
    Ok(decoded)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lower-cases a `Host`/`:authority` value and strips its port, so `API.example.com:443`
/// and `api.example.com` compare equal. IPv6 literals keep their brackets. A trailing dot is
/// kept: Envoy routes `api.example.com.` apart from `api.example.com`, so the host authorized
/// must be the host routed, and a dotted host matches no host-scoped activity.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // Only `:digits` may follow the `]`; anything else is kept, so it matches no host.
        match rest.find(']') {
            Some(end) => {
                let after = &host[end + 2..];
                let is_port = after
                    .strip_prefix(':')
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
                if after.is_empty() || is_port {
                    &host[..end + 2]
                } else {
                    host
                }
            }
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(without_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(without_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonicalization table: every row of SECURITY.md §1, plus Envoy path_utility cases.
    #[test]
    fn canonicalization_table() {
        use PathError::*;
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/api/v1/roles", Ok("/api/v1/roles")),
            ("/api/v1/roles/", Ok("/api/v1/roles/")),
            ("/Admin", Ok("/Admin")),
            // query stripped before matching (oauth2-proxy GHSA-7rh7-c77v-6434)
            ("/public?/admin", Ok("/public")),
            ("/public?x=1?y=/admin", Ok("/public")),
            ("/a?", Ok("/a")),
            // dot segments (CVE-2019-9901)
            ("/a/../admin", Err(DotSegment)),
            ("/a/./b", Err(DotSegment)),
            ("/..", Err(DotSegment)),
            ("/a/..", Err(DotSegment)),
            ("/a/.", Err(DotSegment)),
            ("/a/%2e%2e/admin", Err(NonCanonicalEscape)),
            ("/a/.%2e/admin", Err(NonCanonicalEscape)),
            ("/a/...", Ok("/a/...")),
            ("/a/.hidden", Ok("/a/.hidden")),
            // encoded slash and backslash (CVE-2021-29492, Istio CVE-2021-31920)
            ("/api%2Fadmin", Err(AmbiguousEscape)),
            ("/api%2fadmin", Err(AmbiguousEscape)),
            ("/api%5Cadmin", Err(AmbiguousEscape)),
            ("/api%5cadmin", Err(AmbiguousEscape)),
            ("/api\\admin", Err(Backslash)),
            // double slash (CVE-2021-29492, CVE-2026-26205)
            ("//admin", Err(EmptySegment)),
            ("/a//b", Err(EmptySegment)),
            ("//", Err(EmptySegment)),
            ("/a//", Err(EmptySegment)),
            // fragment (CVE-2021-32779, Istio CVE-2021-39156)
            ("/a#/admin", Err(Fragment)),
            ("/a%23b", Err(AmbiguousEscape)),
            // matrix params (CVE-2026-73511, CVE-2026-73551, CVE-2026-73553)
            ("/user/..;x=y/admin", Err(MatrixParameter)),
            ("/user;jsessionid=1", Err(MatrixParameter)),
            ("/user%3Bx", Err(AmbiguousEscape)),
            // NUL, control bytes, invalid escapes, double encoding (CVE-2023-27488)
            ("/a%00b", Err(ForbiddenByte)),
            ("/a%0a", Err(ForbiddenByte)),
            ("/a%7F", Err(ForbiddenByte)),
            ("/a%C2%85b", Err(ForbiddenByte)),
            ("/a%C2%80", Err(ForbiddenByte)),
            ("/a%C2%9F", Err(ForbiddenByte)),
            ("/a%C2%A0", Ok("/a\u{a0}")),
            ("/a\tb", Err(ForbiddenByte)),
            ("/a b", Err(ForbiddenByte)),
            ("/a\u{0}b", Err(ForbiddenByte)),
            ("/caf\u{e9}", Err(ForbiddenByte)),
            ("/a%zz", Err(BadEscape)),
            ("/a%2", Err(BadEscape)),
            ("/a%", Err(BadEscape)),
            ("/a%252F", Err(AmbiguousEscape)),
            ("/a%25", Err(AmbiguousEscape)),
            ("/a%FF", Err(NotUtf8)),
            ("/a%C3%28", Err(NotUtf8)),
            ("/caf%C3%A9", Ok("/caf\u{e9}")),
            ("/a%20b", Ok("/a b")),
            ("/a%3Fb", Err(AmbiguousEscape)),
            ("/%41dmin", Err(NonCanonicalEscape)),
            ("/%7euser", Err(NonCanonicalEscape)),
            // not origin-form: never parse as a URI (authority form, asterisk form)
            ("", Err(Missing)),
            ("admin", Err(NotOriginForm)),
            ("*", Err(NotOriginForm)),
            ("http://evil/admin", Err(NotOriginForm)),
            ("?/admin", Err(NotOriginForm)),
        ];
        for (input, expected) in cases {
            let got = canonicalize(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "input {input:?}");
        }
    }

    #[test]
    fn canonical_path_without_escapes_is_borrowed() {
        assert!(matches!(canonicalize("/a/b?c"), Ok(Cow::Borrowed("/a/b"))));
    }

    #[test]
    fn overlong_path_is_refused() {
        let longest = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(canonicalize(&longest).is_ok());
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(canonicalize(&long), Err(PathError::TooLong));
    }

    #[test]
    fn hosts_are_lowercased_without_port() {
        let cases = [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM", "api.example.com"),
            ("api.example.com:8443", "api.example.com"),
            ("API.example.com:443", "api.example.com"),
            ("api.example.com.", "api.example.com."),
            ("API.example.com.:443", "api.example.com."),
            ("[::1]:9000", "[::1]"),
            ("[::1]", "[::1]"),
            ("[::1]evil", "[::1]evil"),
            ("[::1]:x", "[::1]:x"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_host(input), expected, "input {input:?}");
        }
    }
}
