//! What a deny says (each cause's reason) and decision ids. API tokens resolved from the
//! snapshot without asking the store: tests/snapshot_tokens.rs (it needs the store).

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

#[test]
fn every_reason_is_listed_once() {
    // Exhaustive: a new reason breaks the build here until it is placed in `Reason::ALL`.
    let place = |r: Reason| match r {
        Reason::MissingCredential => 0,
        Reason::InvalidToken => 1,
        Reason::AmbiguousCredential => 2,
        Reason::InvalidPath => 3,
        Reason::NoMatchingActivity => 4,
        Reason::PolicyUnavailable => 5,
        Reason::InvalidHeader => 6,
        Reason::Csrf => 7,
    };
    for (i, reason) in Reason::ALL.into_iter().enumerate() {
        assert_eq!(place(reason), i, "{reason:?}");
    }
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
