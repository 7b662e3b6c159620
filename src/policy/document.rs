//! The declarative policy file: permissions (each a list of activities), roles (each a list of
//! permissions) and users (each a list of roles). It is the one shape shared by `policy apply`,
//! `policy export` and the snapshot compiler; `validate` accepts only what compiles.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::PolicyError;

/// Granted to every caller, anonymous included.
pub const PUBLIC: &str = "public";
/// Granted to every identified caller.
pub const AUTHENTICATED: &str = "authenticated";
/// Longest activity path regex accepted, in bytes.
pub const MAX_PATH_PATTERN_LEN: usize = 1024;

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

impl TryFrom<ActivityRepr> for Activity {
    type Error = String;

    fn try_from(repr: ActivityRepr) -> Result<Self, String> {
        let (method, path, host) = match repr {
            ActivityRepr::Short(s) => {
                let s = s.trim();
                let (method, path) = s
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("activity {s:?} is not \"METHOD PATH-REGEX\""))?;
                (method.to_owned(), path.trim().to_owned(), None)
            }
            ActivityRepr::Full(f) => (f.method, f.path, f.host),
        };
        let method = Method::parse(&method).ok_or_else(|| {
            format!(
                "unknown method {method:?} (expected GET HEAD POST PUT PATCH DELETE OPTIONS or *)"
            )
        })?;
        let host = match host {
            Some(h) if h.is_empty() => None,
            Some(h) => {
                let normalized = super::path::normalize_host(&h).into_owned();
                if normalized != h.to_ascii_lowercase() || h.contains(':') {
                    return Err(format!("host {h:?} must be a plain host name without port"));
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

impl PolicyDocument {
    /// Parses a policy file; `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, PolicyError> {
        let doc: PolicyDocument =
            serde_norway::from_str(text).map_err(|source| PolicyError::Parse {
                origin: origin.to_owned(),
                source,
            })?;
        doc.validate_entries()
            .map_err(|problem| PolicyError::Invalid {
                origin: origin.to_owned(),
                problem,
            })?;
        Ok(doc)
    }

    pub fn to_yaml(&self) -> Result<String, PolicyError> {
        serde_norway::to_string(self).map_err(|source| PolicyError::Parse {
            origin: "export".to_owned(),
            source,
        })
    }

    /// Checks every entry on its own (names, methods, regexes, emails) but not references, so
    /// a partial file may name permissions and roles that are already stored.
    pub fn validate_entries(&self) -> Result<(), String> {
        for (name, spec) in &self.permissions {
            if !valid_name(name) {
                return Err(format!("permission {name:?}: invalid name"));
            }
            for activity in &spec.activities {
                super::compile::compile_activity_regex(&activity.path)
                    .map_err(|e| format!("permission {name:?}: activity {activity}: {e}"))?;
            }
        }
        for role in self.roles.keys() {
            if !valid_name(role) {
                return Err(format!("role {role:?}: invalid name"));
            }
        }
        let mut emails = BTreeSet::new();
        for user in &self.users {
            let email = &user.email;
            if email.is_empty() || !email.contains('@') || email.chars().any(char::is_whitespace) {
                return Err(format!("user {email:?}: invalid email"));
            }
            if !emails.insert(email.to_ascii_lowercase()) {
                return Err(format!("user {email:?}: listed twice"));
            }
        }
        let mut names = BTreeSet::new();
        for sa in &self.service_accounts {
            if !valid_name(&sa.name) {
                return Err(format!("service account {:?}: invalid name", sa.name));
            }
            if !names.insert(sa.name.as_str()) {
                return Err(format!("service account {:?}: listed twice", sa.name));
            }
        }
        Ok(())
    }

    /// Checks every entry and every reference: what a whole policy must satisfy to compile.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_entries()?;
        for (role, permissions) in &self.roles {
            for p in permissions {
                if !self.permissions.contains_key(p) {
                    return Err(format!("role {role:?}: unknown permission {p:?}"));
                }
            }
        }
        for user in &self.users {
            let email = &user.email;
            for role in &user.roles {
                if !self.roles.contains_key(role) {
                    return Err(format!("user {email:?}: unknown role {role:?}"));
                }
            }
        }
        for sa in &self.service_accounts {
            for role in &sa.roles {
                if !self.roles.contains_key(role) {
                    return Err(format!(
                        "service account {:?}: unknown role {role:?}",
                        sa.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// `validate`, with the problem attributed to `origin`.
    pub fn validate_as(&self, origin: &str) -> Result<(), PolicyError> {
        self.validate().map_err(|problem| PolicyError::Invalid {
            origin: origin.to_owned(),
            problem,
        })
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

    /// What the store holds after applying `file` over `self`: with `prune`, exactly the file;
    /// otherwise the current entries with the file's entries replacing those of the same name.
    pub fn merged_with(&self, file: &PolicyDocument, prune: bool) -> PolicyDocument {
        let mut merged = if prune {
            PolicyDocument::default()
        } else {
            self.clone()
        };
        merged
            .permissions
            .extend(file.permissions.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
            .roles
            .extend(file.roles.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut users: BTreeMap<String, UserSpec> = merged
            .users
            .drain(..)
            .map(|u| (u.email.to_ascii_lowercase(), u))
            .collect();
        users.extend(
            file.users
                .iter()
                .map(|u| (u.email.to_ascii_lowercase(), u.clone())),
        );
        merged.users = users.into_values().collect();
        let mut accounts: BTreeMap<String, ServiceAccountSpec> = merged
            .service_accounts
            .drain(..)
            .map(|s| (s.name.clone(), s))
            .collect();
        accounts.extend(
            file.service_accounts
                .iter()
                .map(|s| (s.name.clone(), s.clone())),
        );
        merged.service_accounts = accounts.into_values().collect();
        merged.normalize();
        merged
    }

    /// Human-readable differences from `self` to `other`, one line each (`+`, `-`, `~`).
    pub fn diff(&self, other: &PolicyDocument) -> Vec<String> {
        let mut lines = Vec::new();
        diff_maps(
            &mut lines,
            "permission",
            &self.permissions,
            &other.permissions,
            |a, b| {
                let mut out = Vec::new();
                if a.description != b.description {
                    out.push(format!(
                        "description {:?} -> {:?}",
                        a.description, b.description
                    ));
                }
                for act in b.activities.iter().filter(|x| !a.activities.contains(x)) {
                    out.push(format!("+activity {act}"));
                }
                for act in a.activities.iter().filter(|x| !b.activities.contains(x)) {
                    out.push(format!("-activity {act}"));
                }
                out
            },
        );
        diff_maps(&mut lines, "role", &self.roles, &other.roles, |a, b| {
            list_changes("permission", a, b)
        });
        let users_a: BTreeMap<_, _> = self.users.iter().map(|u| (u.email.clone(), u)).collect();
        let users_b: BTreeMap<_, _> = other.users.iter().map(|u| (u.email.clone(), u)).collect();
        diff_maps(&mut lines, "user", &users_a, &users_b, |a, b| {
            let mut out = Vec::new();
            if a.name != b.name {
                out.push(format!("name {:?} -> {:?}", a.name, b.name));
            }
            if a.disabled != b.disabled {
                out.push(format!("disabled {} -> {}", a.disabled, b.disabled));
            }
            out.extend(list_changes("role", &a.roles, &b.roles));
            out
        });
        let sa_a: BTreeMap<_, _> = self
            .service_accounts
            .iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let sa_b: BTreeMap<_, _> = other
            .service_accounts
            .iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        diff_maps(&mut lines, "service account", &sa_a, &sa_b, |a, b| {
            let mut out = Vec::new();
            if a.description != b.description {
                out.push(format!(
                    "description {:?} -> {:?}",
                    a.description, b.description
                ));
            }
            if a.disabled != b.disabled {
                out.push(format!("disabled {} -> {}", a.disabled, b.disabled));
            }
            out.extend(list_changes("role", &a.roles, &b.roles));
            out
        });
        lines
    }
}

fn list_changes(what: &str, a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = b
        .iter()
        .filter(|x| !a.contains(x))
        .map(|x| format!("+{what} {x}"))
        .collect();
    out.extend(
        a.iter()
            .filter(|x| !b.contains(x))
            .map(|x| format!("-{what} {x}")),
    );
    out
}

fn diff_maps<V: PartialEq>(
    lines: &mut Vec<String>,
    kind: &str,
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    changes: impl Fn(&V, &V) -> Vec<String>,
) {
    for (name, new) in b {
        match a.get(name) {
            None => lines.push(format!("+ {kind} {name}")),
            Some(old) if old != new => {
                lines.push(format!("~ {kind} {name}: {}", changes(old, new).join(", ")))
            }
            Some(_) => {}
        }
    }
    for name in a.keys().filter(|n| !b.contains_key(*n)) {
        lines.push(format!("- {kind} {name}"));
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
    use super::*;

    const EXAMPLE: &str = r#"
permissions:
  roles:read:
    description: View roles and their members
    activities:
      - GET /api/v1/roles
      - GET /api/v1/roles/[^/]+/users
  roles:write:
    activities:
      - POST /api/v1/roles
      - {method: PUT, path: "/api/v1/roles/[^/]+", host: allocations.example.com}
  public:
    activities: [GET /healthz]
roles:
  admin: [roles:read, roles:write]
  viewer: [roles:read]
users:
  - {email: ada@example.com, name: Ada Lovelace, roles: [admin]}
service_accounts:
  - {name: reporting-bot, roles: [viewer]}
"#;

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
    fn bad_files_are_rejected_with_the_entry_named() {
        let cases = [
            ("permissions: [", "example.yaml"),
            ("permissions:\n  p:\n    activities: [FETCH /x]\n", "unknown method \"FETCH\""),
            ("permissions:\n  p:\n    activities: [\"GET /a(\"]\n", "permission \"p\""),
            ("permissions:\n  p:\n    activities: [GET]\n", "METHOD PATH-REGEX"),
            ("users:\n  - {email: nobody, roles: []}\n", "invalid email"),
            ("permissions:\n  \"a,b\": {}\n", "invalid name"),
            ("colour: blue\n", "unknown field"),
            ("service_accounts:\n  - {name: \"a b\"}\n", "invalid name"),
            ("service_accounts:\n  - {name: bot}\n  - {name: bot}\n", "listed twice"),
            ("permissions:\n  p:\n    activities: [{method: GET, path: /x, host: \"a.com:80\"}]\n", "without port"),
        ];
        for (text, expected) in cases {
            let err = PolicyDocument::from_yaml("example.yaml", text).expect_err(text);
            let msg = format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            );
            assert!(
                msg.contains(expected),
                "{text:?} gave {msg:?}, wanted {expected:?}"
            );
            assert!(msg.contains("example.yaml"), "{msg}");
        }
    }

    #[test]
    fn dangling_references_fail_whole_policy_validation() {
        let doc = PolicyDocument::from_yaml("partial.yaml", "roles:\n  admin: [nope]\n")
            .expect("entries are fine");
        assert_eq!(
            doc.validate().expect_err("dangling"),
            "role \"admin\": unknown permission \"nope\""
        );
        let doc =
            PolicyDocument::from_yaml("p.yaml", "users:\n  - {email: a@b.c, roles: [ghost]}\n")
                .expect("entries");
        assert!(doc
            .validate()
            .expect_err("dangling")
            .contains("unknown role \"ghost\""));
    }

    #[test]
    fn oversized_regex_is_rejected() {
        let text = format!(
            "permissions:\n  p:\n    activities: [\"GET /{}\"]\n",
            "a".repeat(MAX_PATH_PATTERN_LEN + 1)
        );
        assert!(PolicyDocument::from_yaml("big.yaml", &text).is_err());
        // Small to write, huge once compiled: a counted repetition blows the size limit.
        let text = "permissions:\n  p:\n    activities: [\"GET /(\\\\w{1000}){1000}\"]\n";
        let err = PolicyDocument::from_yaml("bomb.yaml", text).expect_err("regex bomb");
        assert!(err.to_string().contains("bomb.yaml"));
    }

    #[test]
    fn merge_without_prune_keeps_unnamed_entries() {
        let current = PolicyDocument::from_yaml("a", EXAMPLE).expect("parses");
        let file =
            PolicyDocument::from_yaml("b", "permissions:\n  extra:\n    activities: [GET /x]\n")
                .expect("parses");
        let merged = current.merged_with(&file, false);
        assert!(merged.permissions.contains_key("roles:read"));
        assert!(merged.permissions.contains_key("extra"));
        let pruned = current.merged_with(&file, true);
        assert_eq!(pruned.permissions.keys().collect::<Vec<_>>(), vec!["extra"]);
        let diff = current.merged_with(&current, false);
        let mut normalized = current.clone();
        normalized.normalize();
        assert!(normalized.diff(&diff).is_empty());
    }

    #[test]
    fn diff_names_each_change() {
        let mut a = PolicyDocument::from_yaml("a", EXAMPLE).expect("parses");
        a.normalize();
        let mut b = a.clone();
        b.roles.insert(
            "viewer".into(),
            vec!["roles:read".into(), "roles:write".into()],
        );
        b.permissions.remove("public");
        let lines = a.diff(&b);
        assert!(
            lines.contains(&"- permission public".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"~ role viewer: +permission roles:write".to_string()),
            "{lines:?}"
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
