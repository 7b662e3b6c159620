//! Snapshot tests: the decision table (allow, deny and anchoring cases per rule), roles,
//! token limits, and the literal-prefix buckets finding every kind of activity.

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
        // A row written to the store by hand skips the file checks: compiling refuses it too
        // (the snapshot parses each pattern on its own before its one compilation).
        let mut stored =
            PolicyDocument::from_yaml("t", "permissions:\n  p:\n    activities: [GET /a]\n")
                .expect("valid");
        stored.permissions.get_mut("p").expect("p").activities[0].path = pattern.to_owned();
        assert!(
            PolicySnapshot::compile(&stored, 1).is_err(),
            "{pattern} compiled from the store"
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

#[test]
fn subjects_can_be_swapped_without_recompiling_the_rules() {
    let doc = PolicyDocument::from_yaml("test", POLICY).expect("valid policy");
    let first = PolicySnapshot::compile(&doc, 1).expect("compiles");
    // Users and service accounts are subjects: they do not change the rules.
    let mut with_user = doc.clone();
    with_user.users.push(crate::policy::document::UserSpec {
        email: "new@x.com".to_owned(),
        name: None,
        disabled: false,
        roles: vec![],
    });
    assert!(first.has_rules_of(&with_user));
    let second = first.with_new_subjects(Subjects::default(), 2);
    assert_eq!(second.version(), 2);
    assert!(Arc::ptr_eq(&first.rules, &second.rules), "compiled once");
    let grants = second.grants(true, ["roles:read"], []);
    assert!(second
        .evaluate("GET", "h", "/api/v1/roles", &grants)
        .is_some());
    // Any change to a permission, an activity or a role is a change of rules.
    let mut changed = doc.clone();
    changed
        .permissions
        .get_mut("roles:read")
        .expect("exists")
        .activities
        .pop();
    assert!(!first.has_rules_of(&changed));
    let mut regranted = doc.clone();
    regranted.roles.insert("extra".to_owned(), vec![]);
    assert!(!first.has_rules_of(&regranted));
}
