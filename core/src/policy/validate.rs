//! What a policy must satisfy: every entry on its own (names, path regexes, emails, no entry
//! listed twice) and, for a whole policy, every reference resolved. A policy that validates
//! compiles. Also the lint: warnings that do not stop an apply.

use std::collections::BTreeSet;
use std::fmt;

use super::document::{Activity, PolicyDocument};
use super::pattern::{check_activity_syntax, compile_activity_regex, PatternError};
use super::PolicyError;

/// The kind of entry a problem is found in, as the file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Permission,
    Role,
    User,
    ServiceAccount,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Permission => "permission",
            EntryKind::Role => "role",
            EntryKind::User => "user",
            EntryKind::ServiceAccount => "service account",
        })
    }
}

/// Why a policy is refused: the first entry found wrong, named as the file names it.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{kind} {name:?}: invalid name")]
    InvalidName { kind: EntryKind, name: String },
    #[error("{kind} {name:?}: listed twice")]
    ListedTwice { kind: EntryKind, name: String },
    #[error("user {email:?}: invalid email")]
    InvalidEmail { email: String },
    /// The path regex of one of the permission's activities is refused.
    #[error("permission {permission:?}: activity {activity}")]
    InvalidPathRegex {
        permission: String,
        activity: Activity,
        #[source]
        source: PatternError,
    },
    #[error("role {role:?}: unknown permission {permission:?}")]
    UnknownPermission { role: String, permission: String },
    /// A user or service account names a role the policy does not define.
    #[error("{kind} {name:?}: unknown role {role:?}")]
    UnknownRole {
        kind: EntryKind,
        name: String,
        role: String,
    },
}

/// Names of permissions, roles: letters, digits and `_ . : -`, so they are safe in a
/// comma-separated header.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn check_name(kind: EntryKind, name: &str) -> Result<(), Problem> {
    if valid_name(name) {
        Ok(())
    } else {
        let name = name.to_owned();
        Err(Problem::InvalidName { kind, name })
    }
}

impl PolicyDocument {
    /// Checks every entry on its own (names, methods, regexes, emails) but not references, so
    /// a partial file may name permissions and roles that are already stored.
    pub fn validate_entries(&self) -> Result<(), Problem> {
        self.check_entries(|path| compile_activity_regex(path).map(drop))
    }

    /// The entry checks, with `pattern` deciding whether an activity's path regex is usable.
    fn check_entries(
        &self,
        pattern: impl Fn(&str) -> Result<(), PatternError>,
    ) -> Result<(), Problem> {
        for (name, spec) in &self.permissions {
            check_name(EntryKind::Permission, name)?;
            for activity in &spec.activities {
                pattern(&activity.path).map_err(|source| Problem::InvalidPathRegex {
                    permission: name.clone(),
                    activity: activity.clone(),
                    source,
                })?;
            }
        }
        for role in self.roles.keys() {
            check_name(EntryKind::Role, role)?;
        }
        let mut emails = BTreeSet::new();
        for user in &self.users {
            let email = &user.email;
            if email.is_empty() || !email.contains('@') || email.chars().any(char::is_whitespace) {
                let email = email.clone();
                return Err(Problem::InvalidEmail { email });
            }
            if !emails.insert(email.to_ascii_lowercase()) {
                let (kind, name) = (EntryKind::User, email.clone());
                return Err(Problem::ListedTwice { kind, name });
            }
        }
        let mut names = BTreeSet::new();
        for sa in &self.service_accounts {
            check_name(EntryKind::ServiceAccount, &sa.name)?;
            if !names.insert(sa.name.as_str()) {
                let (kind, name) = (EntryKind::ServiceAccount, sa.name.clone());
                return Err(Problem::ListedTwice { kind, name });
            }
        }
        Ok(())
    }

    /// Checks every entry and every reference: what a whole policy must satisfy to compile.
    pub fn validate(&self) -> Result<(), Problem> {
        self.validate_entries()?;
        self.check_references()
    }

    /// `validate`, but path regexes are only parsed, not compiled: for a snapshot, whose one
    /// compilation of each regex (in its method's set) follows at once.
    pub(super) fn validate_for_compile(&self, origin: &str) -> Result<(), PolicyError> {
        self.check_entries(check_activity_syntax)
            .and_then(|()| self.check_references())
            .map_err(|problem| PolicyError::invalid(origin, problem))
    }

    fn check_references(&self) -> Result<(), Problem> {
        for (role, permissions) in &self.roles {
            if let Some(p) = permissions
                .iter()
                .find(|p| !self.permissions.contains_key(*p))
            {
                return Err(Problem::UnknownPermission {
                    role: role.clone(),
                    permission: p.clone(),
                });
            }
        }
        let holders = (self.users.iter())
            .map(|u| (EntryKind::User, &u.email, &u.roles))
            .chain(
                (self.service_accounts.iter())
                    .map(|s| (EntryKind::ServiceAccount, &s.name, &s.roles)),
            );
        for (kind, name, roles) in holders {
            if let Some(role) = roles.iter().find(|r| !self.roles.contains_key(*r)) {
                return Err(Problem::UnknownRole {
                    kind,
                    name: name.clone(),
                    role: role.clone(),
                });
            }
        }
        Ok(())
    }

    /// `validate`, with the problem attributed to `origin`.
    pub fn validate_as(&self, origin: &str) -> Result<(), PolicyError> {
        self.validate()
            .map_err(|problem| PolicyError::invalid(origin, problem))
    }
}

/// Lint warnings that do not stop an apply: a `.` in a segment that otherwise reads as literal
/// text matches any character (Istio CVE-2026-39350).
pub fn lint(doc: &PolicyDocument) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, spec) in &doc.permissions {
        for activity in &spec.activities {
            for segment in activity.path.split('/') {
                let literal_looking = segment.contains('.')
                    && !segment.contains('\\')
                    && segment
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'));
                if literal_looking {
                    warnings.push(format!(
                        "permission {name:?}: activity {activity}: unescaped '.' in segment {segment:?} matches any character; write '\\.'"
                    ));
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::super::pattern::MAX_PATH_PATTERN_LEN;
    use super::*;

    /// The problem a file is refused for, and the file, the entry and the cause on one line,
    /// as the CLI prints them.
    fn refusal(origin: &str, text: &str) -> (Problem, String) {
        let err = PolicyDocument::from_yaml(origin, text).expect_err(text);
        let line = crate::error_chain(&err);
        let PolicyError::Invalid {
            origin: named,
            problem,
        } = err
        else {
            panic!("{text:?}: not an invalid entry: {err:?}");
        };
        assert_eq!(named, origin);
        (*problem, line)
    }

    #[test]
    fn bad_entries_are_rejected_with_the_entry_named() {
        type Is = fn(&Problem) -> bool;
        let cases: [(&str, Is, &str); 7] = [
            (
                "permissions:\n  p:\n    activities: [\"GET /a(\"]\n",
                |p| matches!(p, Problem::InvalidPathRegex { source: PatternError::DoesNotCompile(_), .. }),
                "example.yaml is invalid: permission \"p\": activity GET /a(: path regex does not compile: regex parse error",
            ),
            (
                "users:\n  - {email: nobody, roles: []}\n",
                |p| matches!(p, Problem::InvalidEmail { email } if email == "nobody"),
                "user \"nobody\": invalid email",
            ),
            (
                "users:\n  - {email: a@b.c}\n  - {email: A@b.c}\n",
                |p| matches!(p, Problem::ListedTwice { kind: EntryKind::User, .. }),
                "user \"A@b.c\": listed twice",
            ),
            (
                "permissions:\n  \"a,b\": {}\n",
                |p| matches!(p, Problem::InvalidName { kind: EntryKind::Permission, .. }),
                "permission \"a,b\": invalid name",
            ),
            (
                "roles:\n  \"a b\": []\n",
                |p| matches!(p, Problem::InvalidName { kind: EntryKind::Role, .. }),
                "role \"a b\": invalid name",
            ),
            (
                "service_accounts:\n  - {name: \"a b\"}\n",
                |p| matches!(p, Problem::InvalidName { kind: EntryKind::ServiceAccount, .. }),
                "service account \"a b\": invalid name",
            ),
            (
                "service_accounts:\n  - {name: bot}\n  - {name: bot}\n",
                |p| matches!(p, Problem::ListedTwice { kind: EntryKind::ServiceAccount, .. }),
                "service account \"bot\": listed twice",
            ),
        ];
        for (text, is, expected) in cases {
            let (problem, line) = refusal("example.yaml", text);
            assert!(is(&problem), "{text:?}: {problem:?}");
            assert!(
                line.contains(expected),
                "{text:?} gave {line:?}, wanted {expected:?}"
            );
            assert!(line.starts_with("example.yaml is invalid: "), "{line}");
        }
    }

    #[test]
    fn dangling_references_fail_whole_policy_validation() {
        let doc = PolicyDocument::from_yaml("partial.yaml", "roles:\n  admin: [nope]\n")
            .expect("entries are fine");
        let problem = doc.validate().expect_err("dangling");
        assert!(
            matches!(&problem, Problem::UnknownPermission { role, permission } if role == "admin" && permission == "nope"),
            "{problem:?}"
        );
        assert_eq!(
            problem.to_string(),
            "role \"admin\": unknown permission \"nope\""
        );
        let doc = PolicyDocument::from_yaml(
            "p.yaml",
            "users:\n  - {email: a@b.c, roles: [ghost]}\nservice_accounts:\n  - {name: bot, roles: [ghost]}\n",
        )
        .expect("entries");
        let problem = doc.validate().expect_err("dangling");
        assert_eq!(
            problem.to_string(),
            "user \"a@b.c\": unknown role \"ghost\""
        );
        let err = doc
            .validate_as("the policy after this apply")
            .expect_err("dangling");
        assert_eq!(
            crate::error_chain(&err),
            "the policy after this apply is invalid: user \"a@b.c\": unknown role \"ghost\""
        );
        let doc = PolicyDocument::from_yaml(
            "p.yaml",
            "roles:\n  r: []\nservice_accounts:\n  - {name: bot, roles: [r, ghost]}\n",
        )
        .expect("entries");
        assert!(matches!(
            doc.validate(),
            Err(Problem::UnknownRole {
                kind: EntryKind::ServiceAccount,
                ..
            })
        ));
    }

    #[test]
    fn oversized_regex_is_rejected() {
        let text = format!(
            "permissions:\n  p:\n    activities: [\"GET /{}\"]\n",
            "a".repeat(MAX_PATH_PATTERN_LEN + 1)
        );
        let (_, line) = refusal("big.yaml", &text);
        assert!(line.contains("longer than 1024 bytes"), "{line}");
        // Small to write, huge once compiled: a counted repetition blows the size limit.
        let text = "permissions:\n  p:\n    activities: [\"GET /(\\\\w{1000}){1000}\"]\n";
        let (problem, line) = refusal("bomb.yaml", text);
        assert!(
            matches!(
                problem,
                Problem::InvalidPathRegex {
                    source: PatternError::TooLarge,
                    ..
                }
            ),
            "{problem:?}"
        );
        assert!(
            line.starts_with("bomb.yaml is invalid: permission \"p\""),
            "{line}"
        );
    }

    #[test]
    fn lint_warns_on_unescaped_dot() {
        let doc = PolicyDocument::from_yaml(
            "l",
            "permissions:\n  p:\n    activities: [GET /api/v1.0/x, \"GET /files/[^/]+\\\\.txt\"]\n",
        )
        .expect("parses");
        let warnings = lint(&doc);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("v1.0"));
    }
}
