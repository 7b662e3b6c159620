//! Activity path regexes: how one is compiled (anchored to the whole canonical path, within size
//! and nesting limits), how a method's set of them is compiled, and the literal prefix they are
//! bucketed by. Every path regex the snapshot runs is built here, so none escapes its anchor.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::Look;

/// Longest activity path regex accepted, in bytes.
pub const MAX_PATH_PATTERN_LEN: usize = 1024;
/// Compiled size limit for one activity regex (CVE-2022-24713: compile-time blow-up).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Compiled size limit for the per-method set of all activity regexes.
pub const REGEX_SET_SIZE_LIMIT: usize = 512 * 1024 * 1024;
/// Nesting limit for activity regexes.
const REGEX_NEST_LIMIT: u32 = 64;

/// Why an activity's path regex is refused.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("empty path regex")]
    Empty,
    #[error("path regex longer than {} bytes", MAX_PATH_PATTERN_LEN)]
    TooLong,
    #[error("path regex does not compile")]
    DoesNotCompile(#[source] regex::Error),
    #[error("path regex does not compile")]
    Syntax(#[source] Box<regex_syntax::Error>),
    #[error("path regex compiles to more than {} bytes", REGEX_SIZE_LIMIT)]
    TooLarge,
}

impl From<regex::Error> for PatternError {
    fn from(e: regex::Error) -> Self {
        match e {
            regex::Error::CompiledTooBig(_) => PatternError::TooLarge,
            other => PatternError::DoesNotCompile(other),
        }
    }
}

/// Wraps a policy path so it must match the whole canonical path.
fn anchored(path: &str) -> String {
    format!(r"\A(?:{path})\z")
}

/// Compiles one activity path the way the snapshot will, with its size limits. Used for
/// validation so a bad regex is reported against its entry.
pub fn compile_activity_regex(path: &str) -> Result<Regex, PatternError> {
    if path.is_empty() {
        return Err(PatternError::Empty);
    }
    if path.len() > MAX_PATH_PATTERN_LEN {
        return Err(PatternError::TooLong);
    }
    // On its own first: an unbalanced `)` could otherwise close the anchoring group early
    // (`")|(.*"` would become `\A(?:)|(.*)\z`, matching every path).
    RegexBuilder::new(path)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()?;
    Ok(RegexBuilder::new(&anchored(path))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()?)
}

/// Checks one activity path without compiling it: length, and that it parses on its own (so an
/// unbalanced `)` cannot close the anchoring group) within the nesting limit. Size limits are
/// enforced when its method's set is compiled.
pub fn check_activity_syntax(path: &str) -> Result<(), PatternError> {
    if path.is_empty() {
        return Err(PatternError::Empty);
    }
    if path.len() > MAX_PATH_PATTERN_LEN {
        return Err(PatternError::TooLong);
    }
    regex_syntax::ParserBuilder::new()
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .parse(path)
        .map(drop)
        .map_err(|e| PatternError::Syntax(Box::new(e)))
}

/// Compiles the anchored set of already validated activity paths, within the set size limit.
pub(super) fn compile_set<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(paths.into_iter().map(anchored))
        .size_limit(REGEX_SET_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
}

/// Splits a path regex into the literal directory it must start with (see [`literal_prefix`])
/// and the regex the rest of the path must match, anchored on its own: `/api/v1/roles/[^/]+`
/// is `/api/v1/roles/` and `[^/]+`. The rest matches the path after the prefix exactly when the
/// whole regex matches the whole path: the prefix is plain text without `|`, groups, classes
/// or escapes, and ends with `/`, a non-word character like the start of text (so `\b` and
/// word-start assertions read alike). The one difference is an assertion of the start of
/// text or line in the rest (`^`, `\A`, `(?m)^`), which can never hold after the prefix but
/// would at the start of the rest; such a regex is not split (prefix `""`).
pub fn split_prefix(pattern: &str) -> (&str, &str) {
    let prefix = literal_prefix(pattern);
    let rest = &pattern[prefix.len()..];
    if prefix.is_empty() {
        return ("", pattern);
    }
    let asserts_start = regex_syntax::ParserBuilder::new()
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .parse(rest)
        .map(|hir| {
            let looks = hir.properties().look_set();
            looks.contains(Look::Start)
                || looks.contains(Look::StartLF)
                || looks.contains(Look::StartCRLF)
        })
        // What does not parse on its own is compiled whole, as before.
        .unwrap_or(true);
    if asserts_start {
        ("", pattern)
    } else {
        (prefix, rest)
    }
}

/// The part of an (anchored) path regex every match must start with, cut back to a `/` so it
/// names a directory; `""` when nothing is certain (alternation, a leading group or class).
pub fn literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|') {
        return "";
    }
    let meta = pattern
        .char_indices()
        .find(|(_, c)| "\\.+*?()[]{}^$|#".contains(*c) || c.is_whitespace())
        .unwrap_or((pattern.len(), ' '));
    let mut end = meta.0;
    // A quantifier applies to the character before it, which is then not certain either.
    if matches!(meta.1, '?' | '*' | '+' | '{') {
        end = pattern[..end]
            .char_indices()
            .last()
            .map(|(i, _)| i)
            .unwrap_or(0);
    }
    match pattern[..end].rfind('/') {
        Some(slash) => &pattern[..=slash],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_prefixes_are_certain_directories() {
        let cases = [
            ("/api/v1/roles", "/api/v1/"),
            ("/api/v1/roles/[^/]+/users", "/api/v1/roles/"),
            ("/api/v1/roles/", "/api/v1/roles/"),
            ("/healthz", "/"),
            ("/api/v1.0/x", "/api/"),
            ("/api/v1s?/x", "/api/"),
            ("/api/?x", "/"),
            ("/api/x*", "/api/"),
            ("/api/v1/(a|b)", ""),
            ("/a|/b.*", ""),
            ("(?i)/admin", ""),
            (".*", ""),
            ("[/]admin/x", ""),
            ("/files/\\d+", "/files/"),
            ("/caf\u{e9}/menu", "/caf\u{e9}/"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(literal_prefix(pattern), expected, "{pattern}");
        }
    }

    #[test]
    fn split_prefixes_keep_the_meaning_of_the_whole() {
        let cases = [
            ("/api/v1/roles/[^/]+", ("/api/v1/roles/", "[^/]+")),
            ("/api/v1/roles/", ("/api/v1/roles/", "")),
            ("/api/v1/(a|b)", ("", "/api/v1/(a|b)")),
            ("/files/\\d+", ("/files/", "\\d+")),
            ("/a/^b", ("", "/a/^b")),
            ("/a/\\Ab", ("", "/a/\\Ab")),
            ("/a/(?m)^b", ("", "/a/(?m)^b")),
            ("/a/b$", ("/a/", "b$")),
            ("/a/\\bword", ("/a/", "\\bword")),
            ("/a/(?i)admin", ("/a/", "(?i)admin")),
        ];
        for (pattern, expected) in cases {
            assert_eq!(split_prefix(pattern), expected, "{pattern}");
        }
        // The rest, anchored on its own, matches the path after the prefix exactly when the
        // whole regex matches the whole path.
        let paths = [
            "/a/b",
            "/a/B",
            "/a/word",
            "/a/xword",
            "/a/admin",
            "/a/ADMIN",
            "/a/",
            "/a/b/c",
            "/api/v1/roles/7",
            "/api/v1/roles/",
            "/api/v1/roles/7/x",
            "/files/12",
            "/files/x",
        ];
        let patterns = [
            "/a/b$",
            "/a/\\bword",
            "/a/\\Bword",
            "/a/(?i)admin",
            "/a/^b",
            "/a/(?m)^b",
            "/a/\\<word",
            "/api/v1/roles/[^/]+",
            "/api/v1/roles/",
            "/files/\\d+",
            "/a/.*",
            "/a/[^/]*",
            "/a/b?",
        ];
        for pattern in patterns {
            let whole = compile_activity_regex(pattern).expect("compiles");
            let (prefix, rest) = split_prefix(pattern);
            let rest = compile_set([rest]).expect("compiles");
            for path in paths {
                let split = path.strip_prefix(prefix).is_some_and(|r| rest.is_match(r));
                assert_eq!(split, whole.is_match(path), "{pattern} on {path}");
            }
        }
    }

    #[test]
    fn compiled_activity_regexes_match_the_whole_path() {
        let re = compile_activity_regex("/a/[0-9]+").expect("compiles");
        assert!(re.is_match("/a/12"));
        assert!(!re.is_match("/a/12/b"), "no suffix");
        assert!(!re.is_match("/x/a/12"), "no prefix");
        let re = compile_activity_regex("/a|/b").expect("compiles");
        assert!(re.is_match("/a") && re.is_match("/b"));
        assert!(!re.is_match("/a/b"), "alternation stays inside the anchor");
    }

    #[test]
    fn each_refusal_is_its_own_variant() {
        let too_long = "a".repeat(MAX_PATH_PATTERN_LEN + 1);
        type Is = fn(&PatternError) -> bool;
        let cases: [(&str, Is, &str); 6] = [
            ("", |e| matches!(e, PatternError::Empty), "empty path regex"),
            (
                &too_long,
                |e| matches!(e, PatternError::TooLong),
                "longer than 1024",
            ),
            (
                "/(",
                |e| matches!(e, PatternError::DoesNotCompile(_)),
                "does not compile",
            ),
            // An unbalanced `)` must not close the anchoring group.
            (
                ")|(.*",
                |e| matches!(e, PatternError::DoesNotCompile(_)),
                "does not compile",
            ),
            // Small to write, huge once compiled (CVE-2022-24713).
            (
                "/(\\w{1000}){1000}",
                |e| matches!(e, PatternError::TooLarge),
                "compiles to more than 262144 bytes",
            ),
            (
                &format!("{}a{}", "(".repeat(70), ")".repeat(70)),
                |e| matches!(e, PatternError::DoesNotCompile(_)),
                "does not compile",
            ),
        ];
        for (pattern, is, message) in cases {
            let err = compile_activity_regex(pattern).expect_err(pattern);
            assert!(is(&err), "{pattern}: {err:?}");
            assert!(err.to_string().contains(message), "{pattern}: {err}");
        }
    }

    #[test]
    fn the_regex_error_is_the_source_not_the_message() {
        let err = compile_activity_regex("/(").expect_err("unclosed group");
        assert_eq!(err.to_string(), "path regex does not compile");
        let source = std::error::Error::source(&err).expect("regex error attached");
        assert!(source.to_string().contains("unclosed group"), "{source}");
    }
}
