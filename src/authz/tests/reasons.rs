//! What a deny says (each cause's reason), decision ids, and API tokens resolved from the
//! snapshot without ever asking the store.

use super::*;

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
        scheme: "https",
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
