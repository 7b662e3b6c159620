//! Candidate policies (`policy apply --shadow`, `promote`, `discard`): stored beside the live
//! policy, evaluated by every sidecar beside it, enforced only once promoted. What a candidate
//! would enforce is the live policy merged with its file, so it is validated and compiled the
//! way `apply` would, against the live policy of the moment.

use super::{checked, ApplyOutcome, ManageError};
use crate::policy::{PolicyDocument, PolicyError, PolicySnapshot, Subjects};

const CANDIDATE: &str = "the policy with the candidate applied";
use crate::store::{Candidate, CandidateStep, PolicyStore};

/// Stores `file` as the candidate (replacing any other); on a dry run writes nothing. Refused,
/// writing nothing, when the live policy merged with it would not validate or compile. The
/// changes listed are the candidate's against the live policy.
pub async fn apply_shadow(
    store: &dyn PolicyStore,
    file: &PolicyDocument,
    prune: bool,
    dry_run: bool,
) -> Result<ApplyOutcome, ManageError> {
    let mut changes = Vec::new();
    let found = &mut changes;
    let version = store
        .update_candidate(Box::new(move |current, version, stored| {
            let merged = checked(current, file, prune, version, CANDIDATE)?;
            *found = current.diff(&merged);
            let same = stored.is_some_and(|c| c.file == *file && c.prune == prune);
            if dry_run || same {
                return Ok(CandidateStep::Nothing);
            }
            let created_at = crate::value::UnixTime::now_or_epoch().as_secs();
            Ok(CandidateStep::Store(Candidate {
                file: file.clone(),
                prune,
                created_at,
            }))
        }))
        .await?;
    Ok(ApplyOutcome { changes, version })
}

/// Makes the candidate the live policy and drops it, in one transaction that every sidecar
/// sees as one new version. The changes listed are those made to the live policy.
pub async fn promote(store: &dyn PolicyStore) -> Result<ApplyOutcome, ManageError> {
    let mut changes = None;
    let found = &mut changes;
    let version = store
        .update_candidate(Box::new(move |current, version, stored| {
            let Some(c) = stored else {
                return Ok(CandidateStep::Nothing);
            };
            let merged = checked(current, &c.file, c.prune, version, CANDIDATE)?;
            *found = Some(current.diff(&merged));
            Ok(CandidateStep::Promote(merged))
        }))
        .await?;
    let changes = changes.ok_or(ManageError::NoCandidate)?;
    Ok(ApplyOutcome { changes, version })
}

/// Drops the candidate; the live policy is unchanged.
pub async fn discard(store: &dyn PolicyStore) -> Result<i64, ManageError> {
    let mut had = false;
    let found = &mut had;
    let version = store
        .update_candidate(Box::new(move |_, _, stored| {
            *found = stored.is_some();
            Ok(if stored.is_some() {
                CandidateStep::Discard
            } else {
                CandidateStep::Nothing
            })
        }))
        .await
        .map_err(ManageError::from)?;
    if !had {
        return Err(ManageError::NoCandidate);
    }
    Ok(version)
}

/// What a sidecar evaluates a candidate as: the live rules (`rules`, without users) merged with
/// its file, compiled, with the live subjects as the candidate leaves them.
pub fn compile_candidate(
    rules: &PolicyDocument,
    subjects: &Subjects,
    candidate: &Candidate,
    version: i64,
) -> Result<PolicySnapshot, PolicyError> {
    let merged = rules.merged_with(&candidate.file, candidate.prune);
    let rules_only = PolicyDocument {
        permissions: merged.permissions,
        roles: merged.roles,
        ..PolicyDocument::default()
    };
    Ok(PolicySnapshot::compile(&rules_only, version)?
        .with_subjects(candidate_subjects(subjects, candidate)))
}

/// The live subjects as a candidate leaves them.
pub fn candidate_subjects(subjects: &Subjects, candidate: &Candidate) -> Subjects {
    subjects.overlaid(
        &candidate.file.users,
        &candidate.file.service_accounts,
        candidate.prune,
    )
}
