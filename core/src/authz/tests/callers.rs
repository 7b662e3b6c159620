//! Callers other than a plain JWT: API tokens and their limits, assumed and anonymous callers;
//! and what every caller is matched on: method, anchoring, host, role names.

use super::*;

#[test]
fn a_limited_api_token_holds_only_its_limit_and_hides_its_owners_roles() {
    let token = |limit: Option<&[&str]>| {
        Arc::new(Principal::ApiToken(TokenCaller {
            token_id: "tok_1".to_owned(),
            owner: TokenSubject::User {
                id: 1,
                email: "v@x.com".to_owned(),
                name: None,
            },
            roles: vec!["admin".to_owned()],
            limit: limit.map(|l| l.iter().map(|p| (*p).to_owned()).collect()),
            expires_at: None,
        }))
    };
    let full = token(None);
    assert_eq!(
        outcome(&decide("POST", "/r", Some(full), PermissionSource::Token)),
        Ok(vec!["admin".to_owned()])
    );
    let limited = token(Some(&["read"]));
    assert_eq!(
        outcome(&decide(
            "GET",
            "/r",
            Some(limited.clone()),
            PermissionSource::Token
        )),
        Ok(Vec::new()),
        "no roles upstream: an upstream deciding on x-auth-roles would ignore the limit"
    );
    assert_eq!(
        outcome(&decide(
            "POST",
            "/r",
            Some(limited),
            PermissionSource::Token
        )),
        Err(Reason::NoMatchingActivity)
    );
    // Tokens are never checked against the JWT subjects (a service account has none).
    let Decision::Allow(a) = decide("GET", "/r", Some(token(None)), PermissionSource::Store) else {
        panic!("denied")
    };
    let names: Vec<&str> = a.permissions.iter().map(|p| &**p).collect();
    assert_eq!(names, ["authenticated", "public", "read", "write"]);
}

#[test]
fn anonymous_and_assumed_callers() {
    assert_eq!(
        outcome(&decide("GET", "/open", None, PermissionSource::Token)),
        Ok(Vec::new())
    );
    assert_eq!(
        outcome(&decide("GET", "/r", None, PermissionSource::Token)),
        Err(Reason::MissingCredential)
    );
    let assumed = Arc::new(Principal::Assumed {
        permissions: vec!["write".to_owned()],
    });
    assert_eq!(
        outcome(&decide(
            "POST",
            "/r",
            Some(assumed.clone()),
            PermissionSource::Store
        )),
        Ok(Vec::new())
    );
    assert_eq!(
        outcome(&decide("GET", "/r", Some(assumed), PermissionSource::Store)),
        Err(Reason::NoMatchingActivity)
    );
}

#[test]
fn anchoring_and_method_are_exact() {
    let viewer = || Some(jwt("1", &["viewer"], None, None));
    for (method, path, allowed) in [
        ("GET", "/r", true),
        ("GET", "/r/", false),
        ("GET", "/rr", false),
        ("GET", "/x/r", false),
        ("HEAD", "/r", false),
    ] {
        let got = outcome(&decide(method, path, viewer(), PermissionSource::Token)).is_ok();
        assert_eq!(got, allowed, "{method} {path}");
    }
}

/// Issue 8, hole 2: the host a permission is scoped to is compared exactly, after lower-casing
/// and dropping the port; a trailing dot is a different host (Envoy routes it apart).
#[test]
fn host_scoped_permissions_match_case_and_port_but_not_a_trailing_dot() {
    let doc = PolicyDocument::from_yaml(
        "test",
        "permissions:\n  w:\n    activities: [{method: PUT, path: \"/r/[^/]+\", host: allocations.example.com}]\n",
    )
    .expect("policy");
    let snapshot = PolicySnapshot::compile(&doc, 1).expect("compiles");
    let caller = Some(Arc::new(Principal::Assumed {
        permissions: vec!["w".to_owned()],
    }));
    for (host, allowed) in [
        ("allocations.example.com", true),
        ("Allocations.Example.COM", true),
        ("allocations.example.com:443", true),
        ("allocations.example.com.", false),
        ("allocations.example.com.:443", false),
        ("allocations.example.com..", false),
        ("evil.allocations.example.com", false),
        ("allocations.example.com.evil", false),
    ] {
        let d = decide_with(
            &snapshot,
            "PUT",
            host,
            "/r/7",
            caller.clone(),
            PermissionSource::Token,
        );
        assert_eq!(matches!(d, Decision::Allow(_)), allowed, "{host}");
    }
}

/// Issue 8, hole 1: role names from a token are held to the same rule as stored names; an
/// entry that is not a valid name is dropped (it could never name a stored role anyway), so
/// `viewer,admin` or `a=b` never reaches the upstream's `x-auth-roles`.
#[test]
fn invalid_role_names_in_a_token_never_reach_the_upstream() {
    let roles = [
        "viewer",
        "viewer,admin",
        "ad min",
        "x;y",
        "a=b",
        "ok.role:1-x_y",
        "",
    ];
    let d = decide(
        "GET",
        "/r",
        Some(jwt("1", &roles, None, None)),
        PermissionSource::Token,
    );
    assert_eq!(
        outcome(&d),
        Ok(vec!["ok.role:1-x_y".to_owned(), "viewer".to_owned()])
    );
    // The dropped entries granted nothing either: only viewer's read is held.
    let Decision::Allow(a) = d else {
        panic!("denied")
    };
    let names: Vec<&str> = a.permissions.iter().map(|p| &**p).collect();
    assert_eq!(names, ["authenticated", "public", "read"]);
}
