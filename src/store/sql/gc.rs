//! Housekeeping in SQL: one transaction of deletes, by one leader at a time. On PostgreSQL the
//! leader is whoever takes a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`);
//! anyone else skips the round rather than wait. On SQLite the database's single write lock
//! serializes rounds, and a round that finds nothing left removes nothing. Nothing here bumps
//! the policy version: an absent row is refused exactly like the revoked or expired one it was
//! (see `store::gc`).

use sqlx::{AnyConnection, Row};

use super::{Dialect, SqlStore};
use crate::store::{GcOutcome, GcTable, Removed, StoreError, REVOCATION_GRACE_SECS};

/// The advisory-lock key housekeeping rounds take on PostgreSQL ("portgc" in ASCII).
pub const GC_LOCK_KEY: i64 = 123_623_963_912_035;

/// Takes the housekeeping lock for the transaction, if no other session holds it.
const TRY_LOCK: &str =
    "SELECT CAST(CASE WHEN pg_try_advisory_xact_lock($1) THEN 1 ELSE 0 END AS BIGINT)";

/// Sessions that have ended: revoked, or expired before `$1`.
macro_rules! ended_sessions {
    () => {
        "SELECT id FROM sessions WHERE revoked_at IS NOT NULL OR expires_at < $1"
    };
}

/// Every delete of a round, in order (codes and refresh tokens before their sessions). `$1` is
/// now less `REVOCATION_GRACE_SECS`: no sidecar's leeway reaches back past it.
const STATEMENTS: [(GcTable, &str); 5] = [
    // Spent codes are refused like unknown ones; so are codes of ended sessions, whose
    // exchange finds no live session.
    (
        GcTable::HandoffCodes,
        concat!(
            "DELETE FROM handoff_codes WHERE used_at IS NOT NULL OR expires_at < $1 \
             OR session_id IN (",
            ended_sessions!(),
            ")"
        ),
    ),
    // Kept while the session lives (a reused one must still be recognised); an ended session
    // refuses all of them anyway.
    (
        GcTable::RefreshTokens,
        concat!(
            "DELETE FROM refresh_tokens WHERE session_id IN (",
            ended_sessions!(),
            ")"
        ),
    ),
    // A revoked session's tokens are refused by its id in revoked_jtis, kept until the
    // session would have expired; a missing session is not live.
    (
        GcTable::Sessions,
        "DELETE FROM sessions WHERE revoked_at < $1 OR expires_at < $1",
    ),
    (
        GcTable::RevokedJtis,
        "DELETE FROM revoked_jtis WHERE expires_at < $1",
    ),
    // A token missing from the store is refused like a revoked or expired one.
    (
        GcTable::ApiTokens,
        "DELETE FROM api_tokens WHERE revoked_at < $1 OR expires_at < $1",
    ),
];

async fn remove(conn: &mut AnyConnection, now: i64) -> Result<Removed, StoreError> {
    let mut removed = Removed::default();
    for (table, sql) in STATEMENTS {
        let rows = sqlx::query(sql)
            .bind(now - REVOCATION_GRACE_SECS)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        removed.add(table, rows);
    }
    Ok(removed)
}

/// One housekeeping round at `now` (unix seconds).
pub(super) async fn collect(store: &SqlStore, now: i64) -> Result<GcOutcome, StoreError> {
    let mut tx = store.begin_write().await?;
    if store.dialect == Dialect::Postgres {
        let leader: i64 = sqlx::query(TRY_LOCK)
            .bind(GC_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if leader == 0 {
            tx.rollback().await?;
            return Ok(GcOutcome::Skipped);
        }
    }
    let removed = remove(&mut tx, now).await?;
    tx.commit().await?;
    Ok(GcOutcome::Done(removed))
}
