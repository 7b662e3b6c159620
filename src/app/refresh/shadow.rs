//! Keeps the candidate snapshot (`policy apply --shadow`) beside the live one: rebuilt with
//! every new live snapshot, from the rules and candidate loaded with it, or, when only the
//! live subjects were patched, from the candidate already compiled with the new subjects.
//! A candidate that does not compile against the live policy of the moment is logged once and
//! not evaluated; the live snapshot is never held back by it.

use std::sync::Arc;

use crate::authz::SnapshotHandle;
use crate::manage;
use crate::policy::{PolicyDocument, PolicySnapshot};
use crate::store::Candidate;

/// What the serving candidate was compiled from.
struct Source {
    rules: PolicyDocument,
    candidate: Candidate,
    compiled: Arc<PolicySnapshot>,
}

/// The candidate half of the reloader.
pub(in crate::app) struct ShadowReload {
    handle: SnapshotHandle,
    source: Option<Source>,
    /// The last candidate that failed, and why (logged once, shown on `/status`).
    failed: Option<(PolicyDocument, Candidate, String)>,
}

/// The rules and candidate a live snapshot was loaded with (`None`: only subjects patched).
pub(in crate::app) type Loaded = Option<(PolicyDocument, Option<Candidate>)>;

impl ShadowReload {
    pub fn new(handle: SnapshotHandle) -> Self {
        ShadowReload {
            handle,
            source: None,
            failed: None,
        }
    }

    /// When the stored candidate was stored (whether it is evaluated or not), and why it is
    /// not evaluated, if so.
    pub fn status(&self) -> (Option<i64>, Option<String>) {
        match (&self.source, &self.failed) {
            (_, Some((_, candidate, error))) => (Some(candidate.created_at), Some(error.clone())),
            (Some(s), None) => (Some(s.candidate.created_at), None),
            (None, None) => (None, None),
        }
    }

    /// Swaps in the candidate for the new live snapshot `live`.
    pub async fn update(&mut self, live: &PolicySnapshot, loaded: Loaded) {
        let version = live.version();
        let next = match loaded {
            None => self.source.as_ref().map(|s| {
                let subjects = manage::candidate_subjects(live.subjects(), &s.candidate);
                Arc::new(s.compiled.with_new_subjects(subjects, version))
            }),
            Some((_, None)) => {
                if self.source.take().is_some() {
                    tracing::info!(version, "candidate policy gone (promoted or discarded)");
                }
                self.failed = None;
                None
            }
            Some((rules, Some(candidate))) => self.compiled(live, rules, candidate).await,
        };
        self.handle.store(next);
    }

    async fn compiled(
        &mut self,
        live: &PolicySnapshot,
        rules: PolicyDocument,
        candidate: Candidate,
    ) -> Option<Arc<PolicySnapshot>> {
        let version = live.version();
        if let Some(s) = self
            .source
            .as_ref()
            .filter(|s| s.rules == rules && s.candidate == candidate)
        {
            let subjects = manage::candidate_subjects(live.subjects(), &s.candidate);
            return Some(Arc::new(s.compiled.with_new_subjects(subjects, version)));
        }
        if self
            .failed
            .as_ref()
            .is_some_and(|f| f.0 == rules && f.1 == candidate)
        {
            return None;
        }
        let subjects = live.subjects().clone();
        let (r, c) = (rules.clone(), candidate.clone());
        let built = tokio::task::spawn_blocking(move || {
            manage::compile_candidate(&r, &subjects, &c, version)
        })
        .await;
        match built {
            Ok(Ok(snapshot)) => {
                tracing::info!(
                    version,
                    "candidate policy loaded; evaluated beside the live one, not enforced"
                );
                let compiled = Arc::new(snapshot);
                self.failed = None;
                self.source = Some(Source {
                    rules,
                    candidate,
                    compiled: compiled.clone(),
                });
                Some(compiled)
            }
            Ok(Err(e)) => {
                let message = crate::error_chain(&e);
                tracing::error!(version, error = %message, "the candidate policy does not compile against the live one; it is not evaluated");
                self.source = None;
                self.failed = Some((rules, candidate, message));
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "compiling the candidate policy failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::next_snapshot;
    use crate::store::{MemoryStore, PolicyStore};
    use arc_swap::ArcSwapOption;

    const POLICY: &str =
        "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n\
                          users:\n  - {email: v@x.com, roles: [viewer]}\n";

    /// One reloader step: the next live snapshot and the candidate rebuilt with it.
    async fn step(
        store: &MemoryStore,
        serving: Option<Arc<PolicySnapshot>>,
        shadow: &mut ShadowReload,
    ) -> Arc<PolicySnapshot> {
        let next = next_snapshot(store, serving.as_deref())
            .await
            .expect("loads")
            .expect("a new version");
        let live = Arc::new(next.snapshot);
        shadow.update(&live, next.loaded).await;
        live
    }

    /// A store with `POLICY`, and a candidate reloader that has loaded its first snapshot.
    async fn started() -> (
        MemoryStore,
        SnapshotHandle,
        ShadowReload,
        Arc<PolicySnapshot>,
    ) {
        let store = MemoryStore::new();
        let doc = PolicyDocument::from_yaml("t", POLICY).expect("policy");
        manage::apply(&store, &doc, false, false)
            .await
            .expect("applies");
        let handle: SnapshotHandle = Arc::new(ArcSwapOption::empty());
        let mut shadow = ShadowReload::new(handle.clone());
        let live = step(&store, None, &mut shadow).await;
        (store, handle, shadow, live)
    }

    #[tokio::test]
    async fn the_candidate_is_rebuilt_with_every_live_snapshot_and_dropped_with_it() {
        let (store, handle, mut shadow, live) = started().await;
        assert!(handle.load().is_none(), "no candidate stored");

        let candidate = PolicyDocument::from_yaml("c", "roles:\n  viewer: []\n").expect("doc");
        manage::apply_shadow(&store, &candidate, false, false)
            .await
            .expect("stored");
        let live = step(&store, Some(live), &mut shadow).await;
        let first = handle.load_full().expect("candidate loaded");
        assert_eq!(first.version(), live.version());
        assert!(shadow.status().0.is_some_and(|t| t > 0));

        // A revocation patches the live subjects: the candidate gets them, not recompiled.
        store.revoke_jti("j1", None).await.expect("revokes");
        let live = step(&store, Some(live), &mut shadow).await;
        let second = handle.load_full().expect("still loaded");
        assert!(second.subjects().is_revoked("j1"));
        assert_eq!(second.version(), live.version());
        assert_ne!(first.serial(), second.serial());

        manage::discard(&store).await.expect("discards");
        step(&store, Some(live), &mut shadow).await;
        assert!(handle.load().is_none());
        assert_eq!(shadow.status(), (None, None));
    }

    /// A stored candidate that stops compiling against the live policy is not evaluated, and
    /// `/status` still says when it was stored, beside why it is not evaluated.
    #[tokio::test]
    async fn a_candidate_that_no_longer_compiles_keeps_its_stored_at() {
        let (store, handle, mut shadow, live) = started().await;
        let candidate = PolicyDocument::from_yaml("c", "roles:\n  auditor: [read]\n").expect("doc");
        manage::apply_shadow(&store, &candidate, false, false)
            .await
            .expect("stored");
        let live = step(&store, Some(live), &mut shadow).await;
        let (stored_at, error) = shadow.status();
        assert!(stored_at.is_some_and(|t| t > 0), "{stored_at:?}");
        assert_eq!(error, None);

        // The live policy drops `read`, which the candidate's role names.
        let without_read = PolicyDocument::from_yaml(
            "t2",
            "permissions:\n  other:\n    activities: [GET /o]\nroles:\n  viewer: [other]\n\
             users:\n  - {email: v@x.com, roles: [viewer]}\n",
        )
        .expect("policy");
        manage::apply(&store, &without_read, true, false)
            .await
            .expect("applies");
        step(&store, Some(live), &mut shadow).await;
        assert!(handle.load().is_none(), "not evaluated");
        let (after, error) = shadow.status();
        assert!(error.is_some_and(|e| e.contains("read")));
        assert_eq!(after, stored_at, "still says when it was stored");
    }
}
