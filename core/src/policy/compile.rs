//! Compiles a validated `PolicyDocument` into an immutable `PolicySnapshot`: per method, anchored
//! `RegexSet`s bucketed by literal prefix (built by `pattern`), each pattern mapped to the bitset
//! of permissions granting it; grants and `evaluate`. Evaluation is pure, synchronous and
//! compiles nothing; a document that does not compile produces no snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fixedbitset::FixedBitSet;
use regex::RegexSet;

use super::document::{Activity, Method, PermissionSpec, PolicyDocument, AUTHENTICATED, PUBLIC};
use super::pattern::{self, split_prefix};
use super::{PolicyError, Subjects};

// Kept at their old paths for callers; they live in `pattern`.
pub use super::pattern::{compile_activity_regex, REGEX_SET_SIZE_LIMIT, REGEX_SIZE_LIMIT};

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
    /// The bucket's regexes less its prefix (see [`pattern::split_prefix`]), matched against
    /// the path less the prefix. Buckets whose rests are the same share one compiled set:
    /// `/svc1/res1/[^/]+` and `/svc2/res9/[^/]+` both need only `[^/]+`.
    set: Arc<RegexSet>,
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

/// The compiled rules (permissions, activities, roles): expensive to build, shared between
/// snapshots until the rules themselves change.
#[derive(Debug)]
struct Rules {
    /// What the rules were compiled from, to tell whether a newer document changes them.
    source: RulesSource,
    permissions: Vec<Arc<str>>,
    permission_ids: HashMap<Arc<str>, PermissionId>,
    role_grants: HashMap<String, FixedBitSet>,
    activities: Vec<CompiledActivity>,
    tables: Vec<MethodTable>,
    public: PermissionId,
    authenticated: PermissionId,
}

/// The part of a document the compiled rules depend on.
#[derive(Debug, PartialEq)]
struct RulesSource {
    permissions: BTreeMap<String, PermissionSpec>,
    roles: BTreeMap<String, Vec<String>>,
}

/// The immutable policy every request is decided against: compiled rules and the subjects
/// (users, accounts, tokens, revocations). `version` is the store's version of the whole. A
/// change to subjects alone (a revocation, a new user or token) swaps the subjects and reuses
/// the compiled rules.
#[derive(Debug)]
pub struct PolicySnapshot {
    version: i64,
    /// This snapshot's content within the process: see [`PolicySnapshot::serial`].
    serial: u64,
    rules: Arc<Rules>,
    subjects: Subjects,
}

/// What allowed a request: the permission and the activity it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub permission: &'a str,
    pub activity: &'a Activity,
}

static SERIALS: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> u64 {
    SERIALS.fetch_add(1, Ordering::Relaxed)
}

impl PolicySnapshot {
    /// Compiles a validated document. `version` is the store's policy version it came from.
    pub fn compile(doc: &PolicyDocument, version: i64) -> Result<Self, PolicyError> {
        doc.validate_for_compile(&format!("policy version {version}"))?;
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
        // Ids in name order: a caller's permissions come out of a `Grants` already sorted.
        names.sort_unstable();
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
        // One compiled set per distinct list of rests, shared by every bucket that has it.
        let mut sets: HashMap<Vec<&str>, Arc<RegexSet>> = HashMap::new();
        for slot in 0..TABLES {
            let method = Method::CONCRETE.get(slot).copied();
            let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, a) in activities.iter().enumerate() {
                if a.activity.method == Method::Any || Some(a.activity.method) == method {
                    members
                        .entry(split_prefix(&a.activity.path).0)
                        .or_default()
                        .push(i);
                }
            }
            let mut table = MethodTable::default();
            for (prefix, members) in members {
                let rests: Vec<&str> = members
                    .iter()
                    .map(|&i| split_prefix(&activities[i].activity.path).1)
                    .collect();
                let set = match sets.get(&rests) {
                    Some(set) => set.clone(),
                    None => {
                        let set = pattern::compile_set(rests.iter().copied())
                            .map_err(|source| PolicyError::Compile { version, source })?;
                        let set = Arc::new(set);
                        sets.insert(rests, set.clone());
                        set
                    }
                };
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

        let rules = Rules {
            source: RulesSource {
                permissions: doc.permissions.clone(),
                roles: doc.roles.clone(),
            },
            public: permission_ids[PUBLIC],
            authenticated: permission_ids[AUTHENTICATED],
            permissions: names,
            permission_ids,
            role_grants,
            activities,
            tables,
        };
        Ok(PolicySnapshot {
            version,
            serial: next_serial(),
            rules: Arc::new(rules),
            subjects: Subjects::default(),
        })
    }

    /// Attaches the store's users, accounts, tokens and revocations.
    pub fn with_subjects(mut self, subjects: Subjects) -> Self {
        self.subjects = subjects;
        self.serial = next_serial();
        self
    }

    /// A snapshot at `version` with these subjects and this snapshot's compiled rules: for a
    /// change that touched no rule. Compiles nothing.
    pub fn with_new_subjects(&self, subjects: Subjects, version: i64) -> Self {
        PolicySnapshot {
            version,
            serial: next_serial(),
            rules: self.rules.clone(),
            subjects,
        }
    }

    /// What the rules were compiled from (permissions and roles), for the in-process filter's
    /// bundle: compiling a document with exactly these gives the same rules.
    pub fn rules_source(
        &self,
    ) -> (
        &BTreeMap<String, PermissionSpec>,
        &BTreeMap<String, Vec<String>>,
    ) {
        (&self.rules.source.permissions, &self.rules.source.roles)
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// Names this snapshot's content within the process: every snapshot compiled or given
    /// other subjects gets a serial no other snapshot had, even at the same policy version
    /// (tests build several at version 0). Caches of what a snapshot decided key on it.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Whether `doc` has exactly the rules (permissions, activities, roles) this snapshot
    /// was compiled from, so its subjects can be swapped in without compiling anything.
    pub fn has_rules_of(&self, doc: &PolicyDocument) -> bool {
        self.rules.source.permissions == doc.permissions && self.rules.source.roles == doc.roles
    }

    pub fn activity_count(&self) -> usize {
        self.rules.activities.len()
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
        let mut set = FixedBitSet::with_capacity(self.rules.permissions.len());
        set.insert(self.rules.public);
        if identified {
            set.insert(self.rules.authenticated);
            for p in permissions {
                if let Some(&id) = self.rules.permission_ids.get(p) {
                    set.insert(id);
                }
            }
            for r in roles {
                if let Some(role) = self.rules.role_grants.get(r) {
                    set.union_with(role);
                }
            }
            if let Some(limit) = limit {
                let mut allowed = FixedBitSet::with_capacity(self.rules.permissions.len());
                allowed.insert(self.rules.public);
                allowed.insert(self.rules.authenticated);
                for p in limit {
                    if let Some(&id) = self.rules.permission_ids.get(p.as_str()) {
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
        &self.rules.permissions[id]
    }

    /// The names of the permissions in `grants`, sorted, shared with the snapshot (no copy of
    /// a name is made).
    pub fn permission_names(&self, grants: &Grants) -> Vec<Arc<str>> {
        grants
            .ids()
            .map(|id| self.rules.permissions[id].clone())
            .collect()
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
        let table = &self.rules.tables[table_index(method)];
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
            // The bucket's regexes are the rests after its prefix, which the path starts with.
            let rest = &path[prefix.len()..];
            // `is_match` allocates nothing; `matches` runs only for a bucket that does match.
            if !bucket.set.is_match(rest) {
                continue;
            }
            for pattern in bucket.set.matches(rest).iter() {
                let compiled = &self.rules.activities[bucket.activities[pattern]];
                if compiled.activity.host.as_deref().is_some_and(|h| h != host) {
                    continue;
                }
                if let Some(pid) = compiled.granted_by.ones().find(|&p| grants.contains(p)) {
                    return Some(Match {
                        permission: &self.rules.permissions[pid],
                        activity: &compiled.activity,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
