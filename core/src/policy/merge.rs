//! Combining and comparing policies: what the store holds after a file is applied over it
//! (`merged_with`), and the human-readable changes between two policies (`diff`). A merged
//! policy is normalized; it is validated by the caller before anything is written.

use std::collections::BTreeMap;

use super::document::{PolicyDocument, ServiceAccountSpec, UserSpec};

impl PolicyDocument {
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

#[cfg(test)]
mod tests {
    use super::super::EXAMPLE;
    use super::*;

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
}
