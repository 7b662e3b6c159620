//! API tokens are resolved from the snapshot a request is decided against, never from the
//! store: a down store still answers, and a revocation (a new snapshot) is refused at once.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use portcullis::authz::{
    AccessRequest, Authorizer, Decision, Deny, DenyCause, Reason, SnapshotHandle,
};
use portcullis::identity::{
    ApiTokenSettings, ClaimRules, Identifier, JwtSettings, KeySet, TokenError,
};
use portcullis::manage;
use portcullis::policy::PolicyDocument;
use portcullis::store::{MemoryStore, OwnerRef, PolicyStore};

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\n  write:\n    \
                      activities: [POST /r]\n  public:\n    activities: [GET /open]\n\
                      roles:\n  viewer: [read]\n  admin: [read, write]\n";

#[tokio::test]
async fn api_tokens_are_resolved_from_the_snapshot_never_the_store() {
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
