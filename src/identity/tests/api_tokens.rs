//! API-token resolution against the in-memory store: format before any lookup, the negative
//! cache, errors never cached, a revocation racing a lookup in flight, and the lookup counter.

use std::sync::Arc;

use super::*;
use crate::manage;
use crate::policy::PolicyDocument;
use crate::store::{MemoryStore, OwnerRef, PolicyStore, StoreTokenLookup};

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
                      users:\n  - {email: v@x.com, roles: [viewer]}\n";

async fn setup() -> (MemoryStore, Identifier, String) {
    let store = MemoryStore::new();
    let doc = PolicyDocument::from_yaml("test", POLICY).expect("policy");
    manage::apply(&store, &doc, false, false)
        .await
        .expect("applies");
    let issued = manage::issue_token(&store, OwnerRef::User("v@x.com"), "", 0, None, None)
        .await
        .expect("issued");
    let lookup = Arc::new(StoreTokenLookup(Arc::new(store.clone())));
    let keys = KeySet::new([hmac_key("hs")], None).expect("keys");
    let id =
        Identifier::with_api_tokens(keys, settings(), ApiTokenSettings::default(), Some(lookup));
    (store, id, issued.token)
}

#[tokio::test]
async fn a_valid_token_is_looked_up_once_then_served_from_the_cache() {
    let (store, id, token) = setup().await;
    for _ in 0..3 {
        let p = id.resolve_api_token(&token).await.expect("valid");
        assert_eq!(p.email(), Some("v@x.com"));
        assert_eq!(p.credential(), CredentialKind::ApiToken);
    }
    assert_eq!(store.token_lookups(), 1);
    assert_eq!(id.api_token_cache().store_lookups(), 1);
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store_and_unknown_ones_are_remembered() {
    let (store, id, token) = setup().await;
    let mut typo = token.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    for bad in [typo.as_str(), "pcs_short", &token[..token.len() - 1]] {
        let err = id.resolve_api_token(bad).await.expect_err(bad);
        assert!(
            matches!(err, IdentityError::Token(TokenError::MalformedApiToken(_))),
            "{err}"
        );
    }
    assert_eq!(store.token_lookups(), 0);
    let unknown = api_token::generate();
    for _ in 0..3 {
        let err = id.resolve_api_token(&unknown).await.expect_err("unknown");
        assert!(
            matches!(err, IdentityError::Token(TokenError::UnknownApiToken)),
            "{err}"
        );
    }
    assert_eq!(
        store.token_lookups(),
        1,
        "negatively cached after one lookup"
    );
}

#[tokio::test]
async fn a_store_failure_is_never_cached() {
    let (store, id, token) = setup().await;
    store.set_unreachable(true);
    for _ in 0..2 {
        let err = id.resolve_api_token(&token).await.expect_err("store down");
        assert!(matches!(err, IdentityError::Unavailable(_)), "{err}");
    }
    assert_eq!(store.token_lookups(), 2, "each attempt asked again");
    store.set_unreachable(false);
    id.resolve_api_token(&token).await.expect("store back");
}

#[tokio::test]
async fn a_revocation_during_a_lookup_is_not_undone_by_caching_the_old_answer() {
    let (store, id, token) = setup().await;
    let id = Arc::new(id);
    // A lookup is held in flight; meanwhile the token is revoked and the cache cleared.
    let release = store.hold_next_lookup();
    let in_flight = {
        let (id, token) = (id.clone(), token.clone());
        tokio::spawn(async move { id.resolve_api_token(&token).await })
    };
    while store.token_lookups() == 0 {
        tokio::task::yield_now().await;
    }
    let tokens = store.list_tokens(None).await.expect("list");
    store.revoke_token(&tokens[0].id).await.expect("revoke");
    id.api_token_cache().forget_all();
    drop(release);
    // The lookup that started before the revocation may answer with what it read...
    let _ = in_flight.await.expect("joined");
    // ...but it was not cached: the next use asks again and sees the revocation.
    let err = id.resolve_api_token(&token).await.expect_err("revoked");
    assert!(
        matches!(err, IdentityError::Token(TokenError::RevokedApiToken)),
        "{err}"
    );
    assert_eq!(store.token_lookups(), 2);
}

#[tokio::test]
async fn disabled_owners_and_expired_tokens_are_refused() {
    let (store, id, _) = setup().await;
    let expired = manage::issue_token(&store, OwnerRef::User("v@x.com"), "", 0, Some(1), None)
        .await
        .expect("issued");
    let err = id
        .resolve_api_token(&expired.token)
        .await
        .expect_err("expired");
    assert!(
        matches!(err, IdentityError::Token(TokenError::ExpiredApiToken)),
        "{err}"
    );
    let fresh = manage::issue_token(&store, OwnerRef::User("v@x.com"), "", 0, None, None)
        .await
        .expect("issued");
    let disabled = POLICY.replace("{email: v@x.com,", "{email: v@x.com, disabled: true,");
    let doc = PolicyDocument::from_yaml("test", &disabled).expect("policy");
    manage::apply(&store, &doc, false, false)
        .await
        .expect("applies");
    let err = id
        .resolve_api_token(&fresh.token)
        .await
        .expect_err("disabled");
    assert!(
        matches!(err, IdentityError::Token(TokenError::DisabledOwner)),
        "{err}"
    );
}
