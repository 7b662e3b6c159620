//! The candidate policy row (`policy apply --shadow`): read with the rest of a snapshot's
//! state, written (stored, dropped, or promoted over the live policy) under the policy lock.

use sqlx::{AnyConnection, Row};

use super::{bump_version, read, write, SqlStore};
use crate::policy::PolicyDocument;
use crate::store::{Candidate, CandidatePlan, CandidateStep, Change, StoreError};

/// The stored candidate, if any.
pub(super) async fn load(conn: &mut AnyConnection) -> Result<Option<Candidate>, StoreError> {
    let row = sqlx::query("SELECT document, prune, created_at FROM policy_candidate WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let text: String = row.try_get(0)?;
    let file = PolicyDocument::from_yaml("the stored candidate policy", &text)
        .map_err(StoreError::MalformedCandidate)?;
    Ok(Some(Candidate {
        file,
        prune: row.try_get::<i64, _>(1)? != 0,
        created_at: row.try_get(2)?,
    }))
}

/// Runs `plan` over the live policy and the candidate inside one write transaction.
pub(super) async fn update(store: &SqlStore, plan: CandidatePlan<'_>) -> Result<i64, StoreError> {
    let mut tx = store.begin_write().await?;
    sqlx::query("UPDATE policy_meta SET version = version WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    let (current, version) = read::document(&mut tx).await?;
    let candidate = load(&mut tx).await?;
    match plan(&current, version, candidate.as_ref())? {
        CandidateStep::Nothing => {
            tx.rollback().await?;
            return Ok(version);
        }
        CandidateStep::Store(c) => {
            let text = c.file.to_yaml().map_err(StoreError::MalformedCandidate)?;
            sqlx::query("DELETE FROM policy_candidate")
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO policy_candidate (id, document, prune, created_at) VALUES (1, $1, $2, $3)",
            )
            .bind(text)
            .bind(i64::from(c.prune))
            .bind(c.created_at)
            .execute(&mut *tx)
            .await?;
        }
        CandidateStep::Discard => {
            sqlx::query("DELETE FROM policy_candidate")
                .execute(&mut *tx)
                .await?;
        }
        CandidateStep::Promote(next) => {
            write::changes(&mut tx, store.dialect, &current, &next).await?;
            sqlx::query("DELETE FROM policy_candidate")
                .execute(&mut *tx)
                .await?;
        }
    }
    let version = bump_version(&mut tx, store.dialect, &Change::Policy).await?;
    tx.commit().await?;
    Ok(version)
}
