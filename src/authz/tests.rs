//! The policy step as a table, with no database: JWT callers checked against the snapshot's
//! subjects (revoked jti, the revoke-all boundary, disabled, deleted, store mode), API tokens
//! with limits, assumed callers, anonymous callers, and the reason each deny maps to.

use super::*;
use crate::identity::{TokenCaller, TokenError, TokenSubject};
use crate::policy::{PolicyDocument, Subjects, UserState};

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\n  write:\n    \
                      activities: [POST /r]\n  public:\n    activities: [GET /open]\n\
                      roles:\n  viewer: [read]\n  admin: [read, write]\n";

/// Users: 1 viewer, 2 disabled, 3 whose tokens up to t=1000 are revoked; 9 was deleted;
/// jti "gone" is revoked.
fn snapshot() -> PolicySnapshot {
    let doc = PolicyDocument::from_yaml("test", POLICY).expect("policy");
    let mut subjects = Subjects::default();
    let user = |id: &str, roles: &[&str], disabled, after| UserState {
        email: format!("u{id}@x.com"),
        name: None,
        disabled,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tokens_valid_after: after,
    };
    subjects.insert_user("1".to_owned(), user("1", &["viewer"], false, None));
    subjects.insert_user("2".to_owned(), user("2", &["admin"], true, None));
    subjects.insert_user("3".to_owned(), user("3", &["admin"], false, Some(1000)));
    subjects.mark_deleted("9".to_owned());
    subjects.revoke_jti("gone".to_owned());
    PolicySnapshot::compile(&doc, 1)
        .expect("compiles")
        .with_subjects(subjects)
}

fn jwt(sub: &str, roles: &[&str], iat: Option<i64>, jti: Option<&str>) -> Arc<Principal> {
    Arc::new(Principal::Jwt(JwtCaller {
        subject: sub.to_owned(),
        email: None,
        email_verified: false,
        name: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        permissions: Vec::new(),
        expires_at: UnixTime::from_secs(i64::MAX / 2),
        issued_at: iat.map(UnixTime::from_secs),
        jti: jti.map(str::to_owned),
    }))
}

fn decide(
    method: &str,
    path: &str,
    principal: Option<Arc<Principal>>,
    source: PermissionSource,
) -> Decision {
    decide_with(&snapshot(), method, "", path, principal, source)
}

/// `Ok(roles shown upstream)` on allow, `Err(reason)` on deny.
fn outcome(d: &Decision) -> Result<Vec<String>, Reason> {
    match d {
        Decision::Allow(a) => Ok(a.roles.clone()),
        Decision::Deny(d) => Err(d.reason),
    }
}

/// (name, caller, how JWT callers meet the store, method, expected outcome)
type Case<R = PermissionSource> = (
    &'static str,
    Arc<Principal>,
    R,
    &'static str,
    Result<(), Reason>,
);

#[test]
fn jwt_callers_are_checked_against_the_stores_current_state() {
    use PermissionSource::{Store, Token};
    let admin = ["admin"];
    let cases: Vec<Case> = vec![
        (
            "claims grant write",
            jwt("1", &admin, None, None),
            Token,
            "POST",
            Ok(()),
        ),
        (
            "store says viewer",
            jwt("1", &admin, None, None),
            Store,
            "POST",
            Err(Reason::NoMatchingActivity),
        ),
        (
            "store roles read",
            jwt("1", &[], None, None),
            Store,
            "GET",
            Ok(()),
        ),
        (
            "revoked jti",
            jwt("1", &admin, None, Some("gone")),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "other jti",
            jwt("1", &admin, None, Some("kept")),
            Token,
            "GET",
            Ok(()),
        ),
        (
            "disabled, token mode",
            jwt("2", &admin, None, None),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "disabled, store mode",
            jwt("2", &admin, None, None),
            Store,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "deleted, token mode",
            jwt("9", &admin, None, None),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "deleted, store mode",
            jwt("9", &admin, None, None),
            Store,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "unknown, token mode",
            jwt("77", &admin, None, None),
            Token,
            "GET",
            Ok(()),
        ),
        (
            "unknown, store mode",
            jwt("77", &admin, None, None),
            Store,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "issued before revoke-all",
            jwt("3", &admin, Some(999), None),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "issued at revoke-all",
            jwt("3", &admin, Some(1000), None),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "issued after revoke-all",
            jwt("3", &admin, Some(1001), None),
            Token,
            "GET",
            Ok(()),
        ),
        (
            "no iat after revoke-all",
            jwt("3", &admin, None, None),
            Token,
            "GET",
            Err(Reason::InvalidToken),
        ),
    ];
    for (name, principal, source, method, expected) in cases {
        let got = outcome(&decide(method, "/r", Some(principal), source)).map(|_| ());
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn revocations_carry_their_cause() {
    let causes = [
        (jwt("1", &[], None, Some("gone")), Revocation::TokenRevoked),
        (jwt("2", &[], None, None), Revocation::UserDisabled),
        (jwt("3", &[], Some(5), None), Revocation::UserTokensRevoked),
        (jwt("9", &[], None, None), Revocation::UserDeleted),
    ];
    for (principal, expected) in causes {
        let Decision::Deny(d) = decide("GET", "/r", Some(principal), PermissionSource::Token)
        else {
            panic!("allowed")
        };
        assert!(
            matches!(d.cause, DenyCause::Revoked(r) if r == expected),
            "{:?}",
            d.cause
        );
        assert!(d.principal.is_some(), "the log can say who was refused");
    }
}

#[test]
fn store_mode_shows_the_stored_roles_upstream() {
    let d = decide(
        "GET",
        "/r",
        Some(jwt("1", &["admin"], None, None)),
        PermissionSource::Store,
    );
    assert_eq!(outcome(&d), Ok(vec!["viewer".to_owned()]));
}

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
    assert_eq!(a.permissions, ["authenticated", "public", "read", "write"]);
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

#[test]
fn each_cause_maps_to_its_reason() {
    use crate::identity::CredentialError;
    use crate::policy::path::canonicalize;
    let path_error = canonicalize("/a/../b").expect_err("dot segment");
    let someone = jwt("1", &[], None, None);
    let cases: Vec<(Deny, Reason)> = vec![
        (
            Deny::new(None, DenyCause::NoSnapshot),
            Reason::PolicyUnavailable,
        ),
        (Deny::new(None, path_error.into()), Reason::InvalidPath),
        (
            Deny::new(None, TokenError::Expired.into()),
            Reason::InvalidToken,
        ),
        (
            Deny::new(None, CredentialError::DuplicateAuthorization.into()),
            Reason::AmbiguousCredential,
        ),
    ];
    for (deny, reason) in cases {
        assert_eq!(deny.reason, reason, "{:?}", deny.cause);
    }
    let held = snapshot().grants(true, [], []);
    assert_eq!(
        Deny::new(None, DenyCause::NoActivity { held: held.clone() }).reason,
        Reason::MissingCredential
    );
    assert_eq!(
        Deny::new(Some(someone), DenyCause::NoActivity { held }).reason,
        Reason::NoMatchingActivity
    );
}

#[tokio::test]
async fn api_tokens_are_resolved_from_the_snapshot_never_the_store() {
    use crate::identity::{ApiTokenSettings, ClaimRules, JwtSettings, KeySet};
    use crate::manage;
    use crate::store::{MemoryStore, OwnerRef, PolicyStore};
    let store = MemoryStore::new();
    let policy = format!("{POLICY}users:\n  - {{email: v@x.com, roles: [viewer]}}\n");
    let doc = PolicyDocument::from_yaml("test", &policy).expect("policy");
    manage::apply(&store, &doc, false, false)
        .await
        .expect("applies");
    let issued = manage::issue_token(&store, OwnerRef::User("v@x.com"), "", 0, None, None)
        .await
        .expect("issued");
    let snapshot = Arc::new(manage::load_snapshot(&store).await.expect("loads"));
    let handle: SnapshotHandle = Arc::new(ArcSwapOption::from(Some(snapshot)));
    let settings = JwtSettings {
        rules: ClaimRules {
            issuer: None,
            audience: Vec::new(),
            leeway: std::time::Duration::from_secs(30),
        },
        cookie_name: "jwt-token".to_owned(),
        cache_ttl: std::time::Duration::from_secs(60),
        cache_capacity: 100,
    };
    let keys = KeySet::new([], None).expect("no keys");
    let identifier = Identifier::with_api_tokens(keys, settings, ApiTokenSettings::default());
    let authorizer = Authorizer::new(handle.clone(), Arc::new(identifier));
    let request = |method| AccessRequest {
        method,
        host: "",
        path: "/r",
        headers: vec![("x-api-token", Cow::Borrowed(issued.token.as_str()))],
        not_utf8: None,
    };

    // The store is down: a token never used before is still known (it is in the snapshot).
    store.set_unreachable(true);
    assert!(matches!(
        authorizer.decide(&request("GET")).await,
        Decision::Allow(_)
    ));
    assert!(matches!(
        authorizer.decide(&request("POST")).await,
        Decision::Deny(Deny {
            reason: Reason::NoMatchingActivity,
            ..
        })
    ));
    assert_eq!(
        store.token_lookups(),
        0,
        "the request path never asked the store"
    );

    // Revoked: the next snapshot refuses it, though the previous one had it cached.
    store.set_unreachable(false);
    let tokens = store.list_tokens(None).await.expect("list");
    store.revoke_token(&tokens[0].id).await.expect("revoke");
    let next = manage::load_snapshot(&store).await.expect("loads");
    handle.store(Some(Arc::new(next)));
    let Decision::Deny(d) = authorizer.decide(&request("GET")).await else {
        panic!("a revoked token was allowed")
    };
    assert!(
        matches!(d.cause, DenyCause::Token(TokenError::RevokedApiToken)),
        "{:?}",
        d.cause
    );
    assert_eq!(store.token_lookups(), 0);
}

#[test]
fn decision_ids_are_random_uuid_v7_in_time_order() {
    let ids = DecisionIds::new();
    let (a, b) = (ids.next(), ids.next());
    assert_ne!(a, b);
    for id in [&a, &b] {
        let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 7, "{id}");
    }
    assert!(a < b, "later ids sort after earlier ones: {a} {b}");
    // Not a counter: the random part differs in more than the last digits.
    let tail = |id: &str| id.rsplit('-').next().map(str::to_owned);
    assert_ne!(tail(&a), tail(&b));
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
    assert_eq!(a.permissions, ["authenticated", "public", "read"]);
}

/// Issue 8, hole 3: tokens from an outside identity provider name the stored user by a
/// verified `email` (`jwt.subject_claim: email`), so revocation, disabling and store mode
/// apply to them; an unverified or missing email is refused in that mode.
#[test]
fn an_outside_providers_token_is_matched_by_its_verified_email() {
    let external = |email: Option<&str>, verified: bool, iat: Option<i64>| {
        Arc::new(Principal::Jwt(JwtCaller {
            subject: "idp|a81bc81b".to_owned(),
            email: email.map(str::to_owned),
            email_verified: verified,
            name: None,
            roles: vec!["admin".to_owned()],
            permissions: Vec::new(),
            expires_at: UnixTime::from_secs(i64::MAX / 2),
            issued_at: iat.map(UnixTime::from_secs),
            jti: None,
        }))
    };
    let by_email = |source| JwtSubjects {
        permissions_from: source,
        subject_claim: SubjectClaim::Email,
    };
    use PermissionSource::{Store, Token};
    let cases: Vec<Case<JwtSubjects>> = vec![
        (
            "store roles by email",
            external(Some("u1@x.com"), true, None),
            by_email(Store),
            "GET",
            Ok(()),
        ),
        (
            "stored viewer cannot write",
            external(Some("u1@x.com"), true, None),
            by_email(Store),
            "POST",
            Err(Reason::NoMatchingActivity),
        ),
        (
            "email case",
            external(Some("U1@X.com"), true, None),
            by_email(Store),
            "GET",
            Ok(()),
        ),
        (
            "unverified email",
            external(Some("u1@x.com"), false, None),
            by_email(Token),
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "no email",
            external(None, true, None),
            by_email(Token),
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "disabled by email",
            external(Some("u2@x.com"), true, None),
            by_email(Token),
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "revoked by email",
            external(Some("u3@x.com"), true, Some(999)),
            by_email(Token),
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "issued after revoke",
            external(Some("u3@x.com"), true, Some(1001)),
            by_email(Token),
            "POST",
            Ok(()),
        ),
        (
            "unknown, token mode",
            external(Some("n@x.com"), true, None),
            by_email(Token),
            "POST",
            Ok(()),
        ),
        (
            "unknown, store mode",
            external(Some("n@x.com"), true, None),
            by_email(Store),
            "GET",
            Err(Reason::InvalidToken),
        ),
        (
            "sub mode ignores email",
            external(Some("u2@x.com"), true, None),
            Token.into(),
            "GET",
            Ok(()),
        ),
    ];
    for (name, principal, rules, method, expected) in cases {
        let d = decide_with(&snapshot(), method, "", "/r", Some(principal), rules);
        assert_eq!(outcome(&d).map(|_| ()), expected, "{name}");
    }
}
