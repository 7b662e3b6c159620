//! API-token resolution: format before anything else, then a lookup in the snapshot the
//! request is decided against, cached per snapshot version; refusals are never cached.

use std::cell::Cell;

use super::*;
use crate::identity::api_token::{self, TokenOwner, TokenRecord};

fn record(token: &str, revoked: bool, expires_at: Option<i64>, disabled: bool) -> TokenRecord {
    TokenRecord {
        id: "tok_1".to_owned(),
        digest: digest(token),
        owner: TokenOwner::User {
            id: 7,
            email: "v@x.com".to_owned(),
            name: None,
            disabled,
            roles: vec!["viewer".to_owned()],
        },
        expires_at,
        revoked_at: revoked.then_some(1),
        permissions: None,
    }
}

fn identifier() -> Identifier {
    let keys = KeySet::new([hmac_key("hs")], None).expect("keys");
    Identifier::with_api_tokens(keys, settings(), ApiTokenSettings::default())
}

fn presented(id: &Identifier, token: &str) -> Result<TokenDigest, IdentityError> {
    match id.identify([("x-api-token", token)])? {
        Identified::ApiToken(d) => Ok(d),
        other => panic!("not an API token: {other:?}"),
    }
}

#[test]
fn malformed_tokens_are_refused_before_any_lookup() {
    let id = identifier();
    let token = api_token::generate();
    let mut typo = token.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    for bad in [typo.as_str(), "pcs_short", &token[..token.len() - 1]] {
        let err = presented(&id, bad).expect_err(bad);
        assert!(
            matches!(
                err,
                IdentityError::ApiToken(TokenError::MalformedApiToken(_))
            ),
            "{err}"
        );
    }
    assert_eq!(presented(&id, &token).expect("well-formed"), digest(&token));
}

#[test]
fn a_token_is_looked_up_once_per_snapshot_version() {
    let id = identifier();
    let token = api_token::generate();
    let lookups = Cell::new(0);
    let lookup = |_: &TokenDigest| {
        lookups.set(lookups.get() + 1);
        Some(record(&token, false, None, false))
    };
    for _ in 0..3 {
        let p = id
            .resolve_api_token(&digest(&token), 1, lookup)
            .expect("valid");
        assert_eq!(p.email(), Some("v@x.com"));
        assert_eq!(p.credential(), CredentialKind::ApiToken);
    }
    assert_eq!(lookups.get(), 1);
    id.resolve_api_token(&digest(&token), 2, lookup)
        .expect("valid");
    assert_eq!(
        lookups.get(),
        2,
        "a new snapshot version is looked up again"
    );
}

#[test]
fn a_revocation_in_a_new_version_is_never_answered_from_the_cache() {
    let id = identifier();
    let token = api_token::generate();
    id.resolve_api_token(&digest(&token), 1, |_| {
        Some(record(&token, false, None, false))
    })
    .expect("valid in version 1");
    let err = id
        .resolve_api_token(&digest(&token), 2, |_| {
            Some(record(&token, true, None, false))
        })
        .expect_err("revoked in version 2");
    assert_eq!(err, TokenError::RevokedApiToken);
    // A request still deciding against version 1 may use what version 1 said.
    id.resolve_api_token(&digest(&token), 1, |_| None)
        .expect("version 1's answer");
}

#[test]
fn refusals_are_not_cached_and_unknown_or_mismatched_digests_are_unknown() {
    let id = identifier();
    let token = api_token::generate();
    let d = digest(&token);
    let cases = [
        (
            record(&token, true, None, false),
            TokenError::RevokedApiToken,
        ),
        (
            record(&token, false, Some(1), false),
            TokenError::ExpiredApiToken,
        ),
        (record(&token, false, None, true), TokenError::DisabledOwner),
    ];
    for (stored, expected) in cases {
        assert_eq!(id.resolve_api_token(&d, 1, |_| Some(stored)), Err(expected));
    }
    // Nothing was cached: a valid answer in the same version is taken.
    id.resolve_api_token(&d, 1, |_| Some(record(&token, false, None, false)))
        .expect("valid");
    let other = api_token::generate();
    assert_eq!(
        id.resolve_api_token(&digest(&other), 1, |_| None),
        Err(TokenError::UnknownApiToken)
    );
    assert_eq!(
        id.resolve_api_token(&digest(&other), 1, |_| Some(record(
            &token, false, None, false
        ))),
        Err(TokenError::UnknownApiToken),
        "a record whose digest differs is not this token's"
    );
}
