//! Candidate policies (`policy apply --shadow`, `promote`, `discard`) on every backend: stored
//! beside the live policy without changing it, refused whole when they would not apply,
//! evaluated as the live policy merged with them (so they follow live changes), promoted in
//! one version, discarded without touching the live policy.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use support::pg::{shared_admin_url, PgDatabase};

use portcullis::authz::{decide_on, Decision, JwtSubjects, PermissionSource};
use portcullis::identity::{JwtCaller, Principal, UnixTime};
use portcullis::manage::{self, ManageError};
use portcullis::policy::{PolicyDocument, PolicySnapshot};
use portcullis::store::{MemoryStore, PolicyStore, SqlStore};

const EXAMPLE: &str = include_str!("../examples/policy.yaml");

fn doc(yaml: &str) -> PolicyDocument {
    PolicyDocument::from_yaml("test", yaml).expect("valid policy")
}

/// Grace (the viewer, by stored id) asks for GET /api/v1/roles.
fn grace_reads_roles(snapshot: &PolicySnapshot, id: &str) -> bool {
    let grace = Principal::Jwt(JwtCaller {
        subject: id.to_owned(),
        email: None,
        email_verified: false,
        name: None,
        roles: Vec::new(),
        permissions: Vec::new(),
        expires_at: UnixTime::from_secs(i64::MAX / 2),
        issued_at: None,
        jti: None,
        sid: None,
    });
    let jwt = JwtSubjects::from(PermissionSource::Store);
    let decision = decide_on(
        snapshot,
        "GET",
        "app.example.com",
        "/api/v1/roles",
        Some(&std::sync::Arc::new(grace)),
        jwt,
    );
    matches!(decision, Decision::Allow(_))
}

/// The live snapshot and the candidate's, as a sidecar builds them.
async fn both(store: &dyn PolicyStore) -> (PolicySnapshot, Option<PolicySnapshot>) {
    let state = store.load_state().await.unwrap();
    let candidate = state.candidate.as_ref().map(|c| {
        manage::compile_candidate(&state.document, &state.subjects, c, state.version).unwrap()
    });
    (manage::compile(state).unwrap(), candidate)
}

async fn candidate_story(store: &dyn PolicyStore) {
    manage::apply(store, &doc(EXAMPLE), false, false)
        .await
        .unwrap();
    let grace = store
        .find_user("grace@example.com")
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string();
    let v0 = store.policy_version().await.unwrap();
    assert!(matches!(
        manage::promote(store).await,
        Err(ManageError::NoCandidate)
    ));
    assert!(matches!(
        manage::discard(store).await,
        Err(ManageError::NoCandidate)
    ));

    // Refused whole: a role naming a permission that does not exist; and a dry run.
    let bad = doc("roles:\n  viewer: [ghost]\n");
    assert!(matches!(
        manage::apply_shadow(store, &bad, false, false).await,
        Err(ManageError::Policy(_))
    ));
    let candidate = doc("roles:\n  viewer: []\n");
    let dry = manage::apply_shadow(store, &candidate, false, true)
        .await
        .unwrap();
    assert_eq!(dry.changes.len(), 1, "{dry:?}");
    assert!(store.load_candidate().await.unwrap().is_none());
    assert_eq!(store.policy_version().await.unwrap(), v0);

    // Stored: a new version (sidecars reload), the live policy unchanged.
    let live_before = store.load_policy().await.unwrap().0;
    let stored = manage::apply_shadow(store, &candidate, false, false)
        .await
        .unwrap();
    assert_eq!(stored.version, v0 + 1);
    assert_eq!(store.load_policy().await.unwrap().0, live_before);
    let c = store.load_candidate().await.unwrap().unwrap();
    assert_eq!((c.file, c.prune), (candidate.clone(), false));
    assert!(c.created_at > 0);
    let again = manage::apply_shadow(store, &candidate, false, false)
        .await
        .unwrap();
    assert_eq!(
        again.version,
        v0 + 1,
        "the same candidate again writes nothing"
    );
    let (live, shadow) = both(store).await;
    assert!(grace_reads_roles(&live, &grace));
    assert!(!grace_reads_roles(&shadow.unwrap(), &grace));

    // The candidate follows the live policy: a permission added live is in it too.
    manage::apply(
        store,
        &doc("permissions:\n  extra:\n    activities: [GET /extra]\n"),
        false,
        false,
    )
    .await
    .unwrap();
    let state = store.load_state().await.unwrap();
    assert!(
        state.candidate.is_some(),
        "a live apply keeps the candidate"
    );
    let (_, shadow) = both(store).await;
    assert!(shadow.unwrap().activity_count() > live.activity_count());

    // Promoted: live now, candidate gone, one version.
    let v = store.policy_version().await.unwrap();
    let promoted = manage::promote(store).await.unwrap();
    assert_eq!(promoted.version, v + 1);
    assert!(promoted.changes.iter().any(|l| l.contains("role viewer")));
    assert!(store.load_candidate().await.unwrap().is_none());
    let (live, shadow) = both(store).await;
    assert!(!grace_reads_roles(&live, &grace) && shadow.is_none());

    // Discarded: live untouched.
    let restore = doc("roles:\n  viewer: [roles:read]\n");
    manage::apply_shadow(store, &restore, false, false)
        .await
        .unwrap();
    let live_before = store.load_policy().await.unwrap().0;
    manage::discard(store).await.unwrap();
    assert!(store.load_candidate().await.unwrap().is_none());
    assert_eq!(store.load_policy().await.unwrap().0, live_before);

    // A pruning candidate leaves out the users it does not name.
    let only_ada = doc(
        "permissions:\n  roles:read:\n    activities: [GET /api/v1/roles]\nroles:\n  viewer: [roles:read]\n\
         users:\n  - {email: ada@example.com, roles: [viewer]}\n",
    );
    manage::apply_shadow(store, &only_ada, true, false)
        .await
        .unwrap();
    let c = store.load_candidate().await.unwrap().unwrap();
    assert!(c.prune);
    let (_, shadow) = both(store).await;
    let shadow = shadow.unwrap();
    assert!(shadow.subjects().user(&grace).is_none());
    assert!(shadow.subjects().is_deleted(&grace));
}

#[tokio::test]
async fn candidate_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let store = SqlStore::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    candidate_story(&store).await;
}

#[tokio::test]
async fn candidate_story_in_memory() {
    candidate_story(&MemoryStore::new()).await;
}

#[tokio::test]
async fn candidate_story_on_postgres() {
    let db = PgDatabase::create(&shared_admin_url()).await;
    let store = SqlStore::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    candidate_story(&store).await;
}
