//! Compiles a `PolicyDocument` into an immutable `PolicySnapshot`: one anchored `RegexSet` per
//! method, each pattern mapped to the bitset of permissions granting it. Evaluation is pure,
//! synchronous and compiles nothing; a document that does not compile produces no snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use fixedbitset::FixedBitSet;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::document::{
    Activity, Method, PolicyDocument, AUTHENTICATED, MAX_PATH_PATTERN_LEN, PUBLIC,
};
use super::{PolicyError, Subjects};

/// Compiled size limit for one activity regex (CVE-2022-24713: compile-time blow-up).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Compiled size limit for the per-method set of all activity regexes.
pub const REGEX_SET_SIZE_LIMIT: usize = 512 * 1024 * 1024;
/// Nesting limit for activity regexes.
const REGEX_NEST_LIMIT: u32 = 64;

/// Wraps a policy path so it must match the whole canonical path.
fn anchored(path: &str) -> String {
    format!(r"\A(?:{path})\z")
}

/// Compiles one activity path the way the snapshot will, with its size limits. Used for
/// validation so a bad regex is reported against its entry.
pub fn compile_activity_regex(path: &str) -> Result<Regex, String> {
    if path.is_empty() {
        return Err("empty path regex".to_owned());
    }
    if path.len() > MAX_PATH_PATTERN_LEN {
        return Err(format!(
            "path regex longer than {MAX_PATH_PATTERN_LEN} bytes"
        ));
    }
    // On its own first: an unbalanced `)` could otherwise close the anchoring group early
    // (`")|(.*"` would become `\A(?:)|(.*)\z`, matching every path).
    RegexBuilder::new(path)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| format!("path regex does not compile: {e}"))?;
    RegexBuilder::new(&anchored(path))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| format!("path regex does not compile: {e}"))
}

/// Index of a permission within a snapshot; also its bit in a `Grants` set.
pub type PermissionId = usize;

/// The set of permissions a caller holds, as bits over one snapshot's permission ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants(FixedBitSet);

impl Grants {
    pub fn contains(&self, id: PermissionId) -> bool {
        self.0.contains(id)
    }
    pub fn ids(&self) -> impl Iterator<Item = PermissionId> + '_ {
        self.0.ones()
    }
}

#[derive(Debug)]
struct CompiledActivity {
    activity: Activity,
    granted_by: FixedBitSet,
}

#[derive(Debug)]
struct Bucket {
    set: RegexSet,
    /// Pattern index in `set` -> index in `PolicySnapshot::activities`.
    activities: Vec<usize>,
}

/// The activities of one method, bucketed by the literal directory prefix of their regex
/// (`/api/v1/roles/` for `/api/v1/roles/[^/]+`): a request only runs the few small sets whose
/// prefix its path starts with, so a policy of 10,000 activities costs about what 10 do.
#[derive(Debug, Default)]
struct MethodTable {
    buckets: HashMap<Box<str>, Bucket>,
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

/// A slot per concrete method, and one for methods the policy cannot name (only `*` applies).
const TABLES: usize = Method::CONCRETE.len() + 1;

fn table_index(method: &str) -> usize {
    match Method::parse(method) {
        Some(Method::Any) | None => Method::CONCRETE.len(),
        Some(m) => Method::CONCRETE
            .iter()
            .position(|c| *c == m)
            .unwrap_or(Method::CONCRETE.len()),
    }
}

/// The immutable, compiled policy that every request is decided against.
#[derive(Debug)]
pub struct PolicySnapshot {
    version: i64,
    permissions: Vec<Arc<str>>,
    permission_ids: HashMap<Arc<str>, PermissionId>,
    role_grants: HashMap<String, FixedBitSet>,
    activities: Vec<CompiledActivity>,
    tables: Vec<MethodTable>,
    public: PermissionId,
    authenticated: PermissionId,
    subjects: Subjects,
}

/// What allowed a request: the permission and the activity it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub permission: &'a str,
    pub activity: &'a Activity,
}

impl PolicySnapshot {
    /// Compiles a validated document. `version` is the store's policy version it came from.
    pub fn compile(doc: &PolicyDocument, version: i64) -> Result<Self, PolicyError> {
        doc.validate().map_err(|problem| PolicyError::Invalid {
            origin: format!("policy version {version}"),
            problem,
        })?;
        // Reserved permissions always exist, so every snapshot can answer for them.
        let mut names: Vec<Arc<str>> = doc
            .permissions
            .keys()
            .map(|k| Arc::from(k.as_str()))
            .collect();
        for reserved in [PUBLIC, AUTHENTICATED] {
            if !doc.permissions.contains_key(reserved) {
                names.push(Arc::from(reserved));
            }
        }
        let permission_ids: HashMap<Arc<str>, PermissionId> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let bits = names.len();

        // One entry per distinct activity, with every permission that grants it.
        let mut activity_index: HashMap<&Activity, usize> = HashMap::new();
        let mut activities: Vec<CompiledActivity> = Vec::new();
        for (name, spec) in &doc.permissions {
            let pid = permission_ids[name.as_str()];
            for activity in &spec.activities {
                let idx = *activity_index.entry(activity).or_insert_with(|| {
                    activities.push(CompiledActivity {
                        activity: activity.clone(),
                        granted_by: FixedBitSet::with_capacity(bits),
                    });
                    activities.len() - 1
                });
                activities[idx].granted_by.insert(pid);
            }
        }

        let mut tables = Vec::with_capacity(TABLES);
        for slot in 0..TABLES {
            let method = Method::CONCRETE.get(slot).copied();
            let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, a) in activities.iter().enumerate() {
                if a.activity.method == Method::Any || Some(a.activity.method) == method {
                    members
                        .entry(literal_prefix(&a.activity.path))
                        .or_default()
                        .push(i);
                }
            }
            let mut table = MethodTable::default();
            for (prefix, members) in members {
                let set = RegexSetBuilder::new(
                    members
                        .iter()
                        .map(|&i| anchored(&activities[i].activity.path)),
                )
                .size_limit(REGEX_SET_SIZE_LIMIT)
                .nest_limit(REGEX_NEST_LIMIT)
                .build()
                .map_err(|e| PolicyError::Compile {
                    version,
                    problem: e.to_string(),
                })?;
                table.buckets.insert(
                    prefix.into(),
                    Bucket {
                        set,
                        activities: members,
                    },
                );
            }
            tables.push(table);
        }

        let role_grants = doc
            .roles
            .iter()
            .map(|(role, perms)| {
                let mut set = FixedBitSet::with_capacity(bits);
                for p in perms {
                    set.insert(permission_ids[p.as_str()]);
                }
                (role.clone(), set)
            })
            .collect();

        Ok(PolicySnapshot {
            version,
            public: permission_ids[PUBLIC],
            authenticated: permission_ids[AUTHENTICATED],
            permissions: names,
            permission_ids,
            role_grants,
            activities,
            tables,
            subjects: Subjects::default(),
        })
    }

    /// Attaches the store's users and revocations.
    pub fn with_subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    pub fn activity_count(&self) -> usize {
        self.activities.len()
    }

    /// The grants of a caller: the reserved `public`, plus `authenticated` and the named
    /// permissions and roles when identified. Unknown names grant nothing.
    pub fn grants<'a>(
        &self,
        identified: bool,
        permissions: impl IntoIterator<Item = &'a str>,
        roles: impl IntoIterator<Item = &'a str>,
    ) -> Grants {
        self.limited_grants(identified, permissions, roles, None)
    }

    /// Like `grants`, but never more than `limit` (plus the reserved permissions): an API
    /// token limited to a subset can never exceed its owner, nor the subset.
    pub fn limited_grants<'a>(
        &self,
        identified: bool,
        permissions: impl IntoIterator<Item = &'a str>,
        roles: impl IntoIterator<Item = &'a str>,
        limit: Option<&[String]>,
    ) -> Grants {
        let mut set = FixedBitSet::with_capacity(self.permissions.len());
        set.insert(self.public);
        if identified {
            set.insert(self.authenticated);
            for p in permissions {
                if let Some(&id) = self.permission_ids.get(p) {
                    set.insert(id);
                }
            }
            for r in roles {
                if let Some(role) = self.role_grants.get(r) {
                    set.union_with(role);
                }
            }
            if let Some(limit) = limit {
                let mut allowed = FixedBitSet::with_capacity(self.permissions.len());
                allowed.insert(self.public);
                allowed.insert(self.authenticated);
                for p in limit {
                    if let Some(&id) = self.permission_ids.get(p.as_str()) {
                        allowed.insert(id);
                    }
                }
                set.intersect_with(&allowed);
            }
        }
        Grants(set)
    }

    /// The name of a permission id.
    pub fn permission_name(&self, id: PermissionId) -> &str {
        &self.permissions[id]
    }

    /// Finds an activity matching the request that one of `grants` grants. `path` is the
    /// canonical path; `host` is normalized (lower case, no port).
    pub fn evaluate<'s>(
        &'s self,
        method: &str,
        host: &str,
        path: &str,
        grants: &Grants,
    ) -> Option<Match<'s>> {
        let table = &self.tables[table_index(method)];
        if table.buckets.is_empty() {
            return None;
        }
        // The bucket without a prefix, then one per directory of the path.
        let prefixes = std::iter::once("").chain(
            path.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'/')
                .map(|(i, _)| &path[..=i]),
        );
        for prefix in prefixes {
            let Some(bucket) = table.buckets.get(prefix) else {
                continue;
            };
            // `is_match` allocates nothing; `matches` runs only for a bucket that does match.
            if !bucket.set.is_match(path) {
                continue;
            }
            for pattern in bucket.set.matches(path).iter() {
                let compiled = &self.activities[bucket.activities[pattern]];
                if compiled.activity.host.as_deref().is_some_and(|h| h != host) {
                    continue;
                }
                if let Some(pid) = compiled.granted_by.ones().find(|&p| grants.contains(p)) {
                    return Some(Match {
                        permission: &self.permissions[pid],
                        activity: &compiled.activity,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> PolicySnapshot {
        let doc = PolicyDocument::from_yaml("test", yaml).expect("valid policy");
        PolicySnapshot::compile(&doc, 1).expect("compiles")
    }

    const POLICY: &str = r#"
permissions:
  roles:read:
    activities: [GET /api/v1/roles, "GET /api/v1/roles/[^/]+/users"]
  roles:write:
    activities:
      - POST /api/v1/roles
      - {method: PUT, path: "/api/v1/roles/[^/]+", host: allocations.example.com}
  anything:
    activities: ["* /any/.*"]
  public:
    activities: [GET /healthz]
  authenticated:
    activities: [GET /api/v1/me]
roles:
  admin: [roles:read, roles:write]
"#;

    /// (method, host, path, permissions held, identified, expected permission or None)
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        bool,
        Option<&'static str>,
    );

    #[test]
    fn decision_table() {
        let s = snapshot(POLICY);
        let cases: &[Case] = &[
            (
                "GET",
                "a",
                "/api/v1/roles",
                &["roles:read"],
                true,
                Some("roles:read"),
            ),
            (
                "GET",
                "a",
                "/api/v1/roles/42/users",
                &["roles:read"],
                true,
                Some("roles:read"),
            ),
            // anchoring: neither prefix nor suffix of a longer path matches
            (
                "GET",
                "a",
                "/api/v1/roles/42/users/x",
                &["roles:read"],
                true,
                None,
            ),
            (
                "GET",
                "a",
                "/api/v1/roles/x/delete",
                &["roles:read"],
                true,
                None,
            ),
            ("GET", "a", "/x/api/v1/roles", &["roles:read"], true, None),
            (
                "GET",
                "a",
                "/api/v1/roles/a/b/users",
                &["roles:read"],
                true,
                None,
            ),
            // case and trailing slash are policy, not normalization
            ("GET", "a", "/api/v1/Roles", &["roles:read"], true, None),
            ("GET", "a", "/api/v1/roles/", &["roles:read"], true, None),
            // method scoping
            ("POST", "a", "/api/v1/roles", &["roles:read"], true, None),
            (
                "POST",
                "a",
                "/api/v1/roles",
                &["roles:write"],
                true,
                Some("roles:write"),
            ),
            ("DELETE", "a", "/api/v1/roles", &["roles:write"], true, None),
            ("get", "a", "/api/v1/roles", &["roles:read"], true, None),
            // host scoping
            (
                "PUT",
                "allocations.example.com",
                "/api/v1/roles/7",
                &["roles:write"],
                true,
                Some("roles:write"),
            ),
            (
                "PUT",
                "other.example.com",
                "/api/v1/roles/7",
                &["roles:write"],
                true,
                None,
            ),
            // `*` covers every method, including ones policy cannot name
            (
                "PATCH",
                "a",
                "/any/thing",
                &["anything"],
                true,
                Some("anything"),
            ),
            (
                "PROPFIND",
                "a",
                "/any/thing",
                &["anything"],
                true,
                Some("anything"),
            ),
            ("PROPFIND", "a", "/healthz", &[], false, None),
            // reserved permissions
            ("GET", "a", "/healthz", &[], false, Some("public")),
            ("GET", "a", "/api/v1/me", &[], false, None),
            ("GET", "a", "/api/v1/me", &[], true, Some("authenticated")),
            // unknown permission names grant nothing
            (
                "GET",
                "a",
                "/api/v1/roles",
                &["admin", "roles:*"],
                true,
                None,
            ),
        ];
        for (method, host, path, perms, identified, expected) in cases {
            let grants = s.grants(*identified, perms.iter().copied(), []);
            let got = s
                .evaluate(method, host, path, &grants)
                .map(|m| m.permission);
            assert_eq!(got, *expected, "{method} {host} {path} with {perms:?}");
        }
    }

    #[test]
    fn roles_expand_to_their_permissions() {
        let s = snapshot(POLICY);
        let grants = s.grants(true, [], ["admin"]);
        assert_eq!(
            s.evaluate("POST", "a", "/api/v1/roles", &grants)
                .map(|m| m.permission),
            Some("roles:write")
        );
        let anonymous_roles = s.grants(false, [], ["admin"]);
        assert!(s
            .evaluate("POST", "a", "/api/v1/roles", &anonymous_roles)
            .is_none());
    }

    #[test]
    fn a_limit_never_adds_and_only_narrows() {
        let s = snapshot(POLICY);
        let read_only = ["roles:read".to_owned()];
        let grants = s.limited_grants(true, [], ["admin"], Some(&read_only));
        assert!(s.evaluate("GET", "a", "/api/v1/roles", &grants).is_some());
        assert!(s.evaluate("POST", "a", "/api/v1/roles", &grants).is_none());
        assert!(
            s.evaluate("GET", "a", "/api/v1/me", &grants).is_some(),
            "reserved permissions stay"
        );
        // A limit naming a permission the owner lacks grants nothing extra.
        let more = ["anything".to_owned()];
        let grants = s.limited_grants(true, [], ["admin"], Some(&more));
        assert!(s.evaluate("GET", "a", "/any/x", &grants).is_none());
    }

    #[test]
    fn match_names_the_activity() {
        let s = snapshot(POLICY);
        let grants = s.grants(true, ["roles:read"], []);
        let m = s
            .evaluate("GET", "a", "/api/v1/roles/1/users", &grants)
            .expect("allowed");
        assert_eq!(m.activity.to_string(), "GET /api/v1/roles/[^/]+/users");
    }

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
    fn bucketed_matching_finds_every_kind_of_activity() {
        let s = snapshot(
            "permissions:\n  p:\n    activities: [\"GET /a/b/[0-9]+\", \"GET .*/deep\", \"GET (?i)/CASE\", \"GET /x/?y\", GET /]\n",
        );
        let grants = s.grants(true, ["p"], []);
        for path in ["/a/b/12", "/q/r/deep", "/case", "/CaSe", "/xy", "/x/y", "/"] {
            assert!(s.evaluate("GET", "h", path, &grants).is_some(), "{path}");
        }
        for path in ["/a/b/x", "/a/c/1", "/casex", "/x//y", "/deep/x"] {
            assert!(s.evaluate("GET", "h", path, &grants).is_none(), "{path}");
        }
    }

    #[test]
    fn empty_policy_compiles_and_denies() {
        let s = snapshot("{}");
        let grants = s.grants(true, [], []);
        assert!(s.evaluate("GET", "a", "/", &grants).is_none());
    }

    #[test]
    fn unbalanced_groups_cannot_break_out_of_the_anchor() {
        for pattern in [")|(.*", "/a)|(.*", "/a)|(?:/b"] {
            let doc = format!("permissions:\n  p:\n    activities: [\"GET {pattern}\"]\n");
            assert!(
                PolicyDocument::from_yaml("t", &doc).is_err(),
                "{pattern} accepted"
            );
        }
    }

    #[test]
    fn alternation_cannot_escape_the_anchor() {
        let s = snapshot("permissions:\n  p:\n    activities: [\"GET /a|/b.*\"]\n");
        let grants = s.grants(true, ["p"], []);
        assert!(s.evaluate("GET", "h", "/a", &grants).is_some());
        assert!(s.evaluate("GET", "h", "/b/x", &grants).is_some());
        assert!(s.evaluate("GET", "h", "/a/x", &grants).is_none());
        assert!(s.evaluate("GET", "h", "/x/a", &grants).is_none());
    }
}
