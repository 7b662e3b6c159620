//! The sign-in storage story, run on SQLite and on PostgreSQL: users linked by provider
//! account (not email alone), sessions, refresh-token rotation and reuse, one-time handoff
//! codes (single use, expiry), and session revocation announced as a revoked id.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use portcullis::identity::digest;
use portcullis::store::{
    AccountLink, LinkOutcome, LoginStore, PolicyStore, RefreshOutcome, SqlStore,
};
use support::pg::{shared_admin_url, PgDatabase};

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
users:\n  - {email: provisioned@example.com, roles: [viewer]}\n";

/// A session expiry after any run of this test: a revoked session's id is loaded only while
/// tokens of the session could live (the clock here is real, unlike the story's own times).
const FAR_FUTURE: i64 = 4_000_000_000;

async fn story(store: &SqlStore) {
    store.migrate().await.expect("migrate");
    let doc = portcullis::policy::PolicyDocument::from_yaml("t", POLICY).unwrap();
    portcullis::manage::apply(store, &doc, false, false)
        .await
        .unwrap();
    let google = "https://accounts.google.com";
    let link = |subject: &'static str, email: &'static str| AccountLink {
        provider: google,
        subject,
        email,
        name: Some("N"),
    };
    let roles = vec!["viewer".to_owned(), "no-such-role".to_owned()];

    // Created at first sign-in with the default roles that exist.
    let v0 = store.policy_version().await.unwrap();
    let LinkOutcome::User { user: ada, created } = store
        .link_account(&link("g-ada", "ada@example.com"), &roles, 100)
        .await
        .unwrap()
    else {
        panic!("linked")
    };
    assert!(created);
    assert_eq!(ada.roles, vec!["viewer".to_owned()]);
    assert!(
        store.policy_version().await.unwrap() > v0,
        "sidecars load the new user"
    );
    // Found again by the link, even if the provider now says another email.
    let LinkOutcome::User { user, created } = store
        .link_account(&link("g-ada", "ada@example.com"), &roles, 101)
        .await
        .unwrap()
    else {
        panic!("found")
    };
    assert!(!created);
    assert_eq!(user.id, ada.id);
    // A provisioned user is linked by its verified email once...
    let LinkOutcome::User {
        user: prov,
        created,
    } = store
        .link_account(&link("g-prov", "provisioned@example.com"), &[], 102)
        .await
        .unwrap()
    else {
        panic!("linked")
    };
    assert!(!created);
    assert_eq!(prov.email, "provisioned@example.com");
    // ...and another account of the same provider with that email is not given it.
    assert_eq!(
        store
            .link_account(&link("g-impostor", "provisioned@example.com"), &[], 103)
            .await
            .unwrap(),
        LinkOutcome::EmailLinkedElsewhere
    );
    // Issue 21, item 6: the provider is the source of truth for the email of a linked
    // account: a changed one is stored and sidecars reload...
    let before = store.policy_version().await.unwrap();
    let LinkOutcome::User { user, created } = store
        .link_account(&link("g-ada", "ada.lovelace@example.com"), &roles, 104)
        .await
        .unwrap()
    else {
        panic!("found")
    };
    assert!(!created);
    assert_eq!(
        (user.id, user.email.as_str()),
        (ada.id, "ada.lovelace@example.com")
    );
    assert!(store.policy_version().await.unwrap() > before);
    assert_eq!(
        store.login_user(ada.id).await.unwrap().unwrap().email,
        "ada.lovelace@example.com"
    );
    // ...unless another user has it: refused, nothing changed.
    assert_eq!(
        store
            .link_account(&link("g-ada", "provisioned@example.com"), &roles, 105)
            .await
            .unwrap(),
        LinkOutcome::EmailTakenByAnother
    );
    assert_eq!(
        store.login_user(ada.id).await.unwrap().unwrap().email,
        "ada.lovelace@example.com"
    );
    assert_eq!(
        store.login_user(prov.id).await.unwrap().unwrap().email,
        "provisioned@example.com"
    );

    // Sessions and refresh rotation.
    let r1 = digest("refresh-1");
    store
        .create_session("s1", ada.id, 100, FAR_FUTURE, Some(&r1))
        .await
        .unwrap();
    let r2 = digest("refresh-2");
    assert_eq!(
        store.rotate_refresh(&r1, &r2, 200).await.unwrap(),
        RefreshOutcome::Rotated {
            session_id: "s1".to_owned()
        }
    );
    assert_eq!(
        store
            .rotate_refresh(&digest("never"), &digest("x"), 201)
            .await
            .unwrap(),
        RefreshOutcome::Refused
    );
    let before = store.policy_version().await.unwrap();
    assert_eq!(
        store
            .rotate_refresh(&r1, &digest("refresh-3"), 202)
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: "s1".to_owned()
        }
    );
    let s1 = store.session("s1").await.unwrap().unwrap();
    assert!(!s1.is_live(203));
    assert_eq!(s1.revoked_reason.as_deref(), Some("refresh token reused"));
    assert!(store.policy_version().await.unwrap() > before);
    let state = store.load_state().await.unwrap();
    assert!(
        state.subjects.is_revoked("s1"),
        "the session id is refused as a sid"
    );
    assert_eq!(
        store
            .rotate_refresh(&r2, &digest("refresh-4"), 204)
            .await
            .unwrap(),
        RefreshOutcome::Refused,
        "the family dies with the session"
    );

    // An expired session refreshes no more.
    store
        .create_session("s2", ada.id, 100, 300, Some(&digest("r-s2")))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh(&digest("r-s2"), &digest("r-s2b"), 300)
            .await
            .unwrap(),
        RefreshOutcome::Refused
    );

    // Handoff codes: once, before expiry.
    store
        .create_session("s3", ada.id, 100, FAR_FUTURE, None)
        .await
        .unwrap();
    let code = digest("code");
    store
        .insert_handoff(&code, "s3", "https://partner.example.net", 160)
        .await
        .unwrap();
    assert_eq!(
        store.take_handoff(&code, 150).await.unwrap(),
        Some(("s3".to_owned(), "https://partner.example.net".to_owned()))
    );
    assert_eq!(store.take_handoff(&code, 151).await.unwrap(), None, "used");
    let late = digest("late");
    store
        .insert_handoff(&late, "s3", "https://partner.example.net", 160)
        .await
        .unwrap();
    assert_eq!(
        store.take_handoff(&late, 161).await.unwrap(),
        None,
        "expired"
    );

    // Revocation by user, and listing.
    assert_eq!(
        store
            .revoke_user_sessions("ada.lovelace@example.com", 400)
            .await
            .unwrap(),
        2
    );
    assert!(
        store.revoke_session("s3", "again", 401).await.unwrap(),
        "idempotent"
    );
    assert!(!store.revoke_session("nope", "x", 401).await.unwrap());
    let listed = store
        .list_sessions(Some("ADA.Lovelace@example.com"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|s| s.revoked_at.is_some()));
    assert!(store
        .list_sessions(Some("provisioned@example.com"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn login_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/p.db", dir.path().display());
    let store = SqlStore::connect(&url, 1).await.unwrap();
    story(&store).await;
    store.close().await;
}

#[tokio::test]
async fn login_story_on_postgres() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let store = SqlStore::connect(&db.url, 2).await.unwrap();
    story(&store).await;
    store.close().await;
}
