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
pub(super) struct ShadowReload {
    handle: SnapshotHandle,
    source: Option<Source>,
    /// The last candidate that failed, and why (logged once, shown on `/status`).
    failed: Option<(PolicyDocument, Candidate, String)>,
}

/// The rules and candidate a live snapshot was loaded with (`None`: only subjects patched).
pub(super) type Loaded = Option<(PolicyDocument, Option<Candidate>)>;

impl ShadowReload {
    pub fn new(handle: SnapshotHandle) -> Self {
        ShadowReload {
            handle,
            source: None,
            failed: None,
        }
    }

    /// When the serving candidate was stored, and why the stored one is not evaluated, if so.
    pub fn status(&self) -> (Option<i64>, Option<String>) {
        (
            self.source.as_ref().map(|s| s.candidate.created_at),
            self.failed.as_ref().map(|f| f.2.clone()),
        )
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
