//! JWT callers against the snapshot's subjects: revoked ids, the revoke-all boundary, disabled
//! and deleted users, store mode, and outside providers matched by verified email.

use super::*;

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
            sid: None,
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

#[test]
fn a_token_of_a_revoked_session_is_refused() {
    // Logout revokes the session id; every token carrying it as `sid` is refused.
    let with_sid = |sid: &str| {
        let Principal::Jwt(mut caller) = (*jwt("1", &["admin"], None, Some("fresh"))).clone()
        else {
            unreachable!("jwt() builds a JWT caller")
        };
        caller.sid = Some(sid.to_owned());
        Arc::new(Principal::Jwt(caller))
    };
    let revoked = decide("GET", "/r", Some(with_sid("gone")), PermissionSource::Token);
    assert_eq!(outcome(&revoked), Err(Reason::InvalidToken));
    let live = decide("GET", "/r", Some(with_sid("live")), PermissionSource::Token);
    assert!(outcome(&live).is_ok());
}
