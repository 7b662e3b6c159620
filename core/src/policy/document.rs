//! The declarative policy file: permissions (each a list of activities), roles (each a list of
//! permissions), users and service accounts (each a list of roles); parsing and writing it. It
//! is the one shape shared by `policy apply`, `policy export` and the snapshot compiler; a
//! parsed file has valid entries (`validate`), and references are checked before it compiles.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::PolicyError;

/// Granted to every caller, anonymous included.
pub const PUBLIC: &str = "public";
/// Granted to every identified caller.
pub const AUTHENTICATED: &str = "authenticated";

// Kept at their old paths for callers; they live in `pattern` and `validate`.
pub use super::pattern::MAX_PATH_PATTERN_LEN;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub permissions: BTreeMap<String, PermissionSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserSpec>,
    /// Non-human identities; they reach the system only through API tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub activities: Vec<Activity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An HTTP method an activity applies to; `Any` is written `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Any,
}

impl Method {
    pub const CONCRETE: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Any => "*",
        }
    }

    /// Parses a policy method: exact upper case, as written in HTTP.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "*" => Method::Any,
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a permission allows: a method, a path regex matched against the whole canonical
/// path, and optionally a host (lower case, no port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "ActivityRepr", into = "ActivityRepr")]
pub struct Activity {
    pub method: Method,
    pub path: String,
    pub host: Option<String>,
}

impl fmt::Display for Activity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if let Some(host) = &self.host {
            write!(f, " (host {host})")?;
        }
        Ok(())
    }
}

/// Either `"GET /path"` or `{method: GET, path: /path, host: example.com}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ActivityRepr {
    Short(String),
    Full(FullActivity),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FullActivity {
    method: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

/// Why an activity entry cannot be read (reported inside the parse error, with its line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivityError {
    #[error("activity {text:?} is not \"METHOD PATH-REGEX\"")]
    NotMethodAndPath { text: String },
    #[error("unknown method {method:?} (expected GET HEAD POST PUT PATCH DELETE OPTIONS or *)")]
    UnknownMethod { method: String },
    #[error("host {host:?} must be a plain host name without port")]
    HostWithPort { host: String },
}

impl TryFrom<ActivityRepr> for Activity {
    type Error = ActivityError;

    fn try_from(repr: ActivityRepr) -> Result<Self, ActivityError> {
        let (method, path, host) = match repr {
            ActivityRepr::Short(s) => {
                let s = s.trim();
                let (method, path) = s
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| ActivityError::NotMethodAndPath { text: s.to_owned() })?;
                (method.to_owned(), path.trim().to_owned(), None)
            }
            ActivityRepr::Full(f) => (f.method, f.path, f.host),
        };
        let method = Method::parse(&method).ok_or(ActivityError::UnknownMethod { method })?;
        let host = match host {
            Some(h) if h.is_empty() => None,
            Some(h) => {
                let normalized = super::path::normalize_host(&h).into_owned();
                if normalized != h.to_ascii_lowercase() || h.contains(':') {
                    return Err(ActivityError::HostWithPort { host: h });
                }
                Some(normalized)
            }
            None => None,
        };
        Ok(Activity { method, path, host })
    }
}

impl From<Activity> for ActivityRepr {
    fn from(a: Activity) -> Self {
        match a.host {
            None => ActivityRepr::Short(format!("{} {}", a.method, a.path)),
            Some(host) => ActivityRepr::Full(FullActivity {
                method: a.method.as_str().to_owned(),
                path: a.path,
                host: Some(host),
            }),
        }
    }
}

impl PolicyDocument {
    /// Parses a policy file; `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, PolicyError> {
        let doc: PolicyDocument =
            serde_norway::from_str(text).map_err(|source| PolicyError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
        doc.validate_entries()
            .map_err(|problem| PolicyError::invalid(origin, problem))?;
        Ok(doc)
    }

    pub fn to_yaml(&self) -> Result<String, PolicyError> {
        serde_norway::to_string(self).map_err(PolicyError::Serialize)
    }

    /// Puts every list in a canonical order, so two equal policies compare and export equal.
    pub fn normalize(&mut self) {
        for spec in self.permissions.values_mut() {
            spec.activities.sort();
            spec.activities.dedup();
        }
        for perms in self.roles.values_mut() {
            perms.sort();
            perms.dedup();
        }
        for user in &mut self.users {
            user.email = user.email.to_ascii_lowercase();
            user.roles.sort();
            user.roles.dedup();
        }
        self.users.sort_by(|a, b| a.email.cmp(&b.email));
        for sa in &mut self.service_accounts {
            sa.roles.sort();
            sa.roles.dedup();
        }
        self.service_accounts.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

#[cfg(test)]
mod tests {
    use super::super::EXAMPLE;
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let doc = PolicyDocument::from_yaml("example", EXAMPLE).expect("parses");
        assert_eq!(doc.permissions.len(), 3);
        let write = &doc.permissions["roles:write"].activities[1];
        assert_eq!(write.method, Method::Put);
        assert_eq!(write.host.as_deref(), Some("allocations.example.com"));
        assert_eq!(doc.users[0].roles, vec!["admin"]);
    }

    #[test]
    fn export_format_round_trips() {
        let mut doc = PolicyDocument::from_yaml("example", EXAMPLE).expect("parses");
        doc.normalize();
        let yaml = doc.to_yaml().expect("serializes");
        let again = PolicyDocument::from_yaml("export", &yaml).expect("parses again");
        assert_eq!(doc, again);
    }

    #[test]
    fn unreadable_files_are_parse_errors_naming_the_file_and_line() {
        let cases = [
            ("permissions: [", "expected a map"),
            ("permissions:\n  p:\n    activities: [FETCH /x]\n", "unknown method \"FETCH\""),
            ("permissions:\n  p:\n    activities: [GET]\n", "METHOD PATH-REGEX"),
            ("colour: blue\n", "unknown field"),
            ("permissions:\n  p:\n    activities: [{method: GET, path: /x, host: \"a.com:80\"}]\n", "without port"),
        ];
        for (text, expected) in cases {
            let err = PolicyDocument::from_yaml("example.yaml", text).expect_err(text);
            assert!(
                matches!(err, PolicyError::Parse { .. }),
                "{text:?}: {err:?}"
            );
            let msg = crate::error_chain(&err);
            assert!(
                msg.starts_with("example.yaml: not a valid policy file: "),
                "{msg}"
            );
            assert!(
                msg.contains(expected),
                "{text:?} gave {msg:?}, wanted {expected:?}"
            );
        }
    }

    #[test]
    fn activities_read_both_forms_and_refuse_the_rest() {
        let short = |s: &str| Activity::try_from(ActivityRepr::Short(s.to_owned()));
        let get = short(" GET  /a/b ").expect("short form");
        assert_eq!(
            (get.method, get.path.as_str(), get.host),
            (Method::Get, "/a/b", None)
        );
        let full = Activity::try_from(ActivityRepr::Full(FullActivity {
            method: "*".into(),
            path: "/x".into(),
            host: Some("Api.Example.com".into()),
        }))
        .expect("full form");
        assert_eq!(full.host.as_deref(), Some("api.example.com"));
        let text = "GET".to_owned();
        assert_eq!(short("GET"), Err(ActivityError::NotMethodAndPath { text }));
        let method = "get".to_owned();
        assert_eq!(
            short("get /x"),
            Err(ActivityError::UnknownMethod { method })
        );
    }
}
