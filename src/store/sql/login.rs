//! Sign-in in SQL: account links, users created on first sign-in, sessions, refresh-token
//! rotation with reuse detection, one-time handoff codes. Digests (hex) only, never a token.

use sqlx::{AnyConnection, Row};

use super::{bump_version, SqlStore};
use crate::identity::TokenDigest;
use crate::store::{
    hex, AccountLink, Change, LinkOutcome, LoginStore, RefreshOutcome, SessionInfo, StoreError,
    UserRecord,
};

async fn user_by_id(conn: &mut AnyConnection, id: i64) -> Result<Option<UserRecord>, StoreError> {
    let Some(row) = sqlx::query("SELECT id, email, name, disabled FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let roles = sqlx::query(
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>(0))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(UserRecord {
        id: row.try_get(0)?,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        disabled: row.try_get::<i64, _>(3)? != 0,
        roles,
    }))
}

fn session_row(row: &sqlx::any::AnyRow) -> Result<SessionInfo, StoreError> {
    Ok(SessionInfo {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        email: row.try_get(2)?,
        created_at: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        revoked_reason: row.try_get(6)?,
    })
}

/// A session query: the columns `session_row` reads, then `$tail` (a literal: no SQL is built
/// from data).
macro_rules! sessions_where {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.user_id, u.email, s.created_at, s.expires_at, s.revoked_at, s.revoked_reason \
             FROM sessions s JOIN users u ON u.id = s.user_id ",
            $tail
        )
    };
}

/// Marks a session revoked and lists its id as a revoked JWT id, announcing the change.
async fn revoke_in(
    conn: &mut AnyConnection,
    store: &SqlStore,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT revoked_at, expires_at FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = found else {
        return Ok(false);
    };
    if row.try_get::<Option<i64>, _>(0)?.is_some() {
        return Ok(true);
    }
    // No token of the session outlives it, so neither need its revocation.
    let session_expires_at: i64 = row.try_get(1)?;
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE id = $3")
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO revoked_jtis (jti, revoked_at, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(id)
    .bind(now)
    .bind(session_expires_at)
    .execute(&mut *conn)
    .await?;
    bump_version(conn, store.dialect, &Change::Jti(id.to_owned())).await?;
    Ok(true)
}

#[async_trait::async_trait]
impl LoginStore for SqlStore {
    async fn link_account(
        &self,
        account: &AccountLink<'_>,
        default_roles: &[String],
        now: i64,
    ) -> Result<LinkOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let linked =
            sqlx::query("SELECT user_id FROM user_identities WHERE provider = $1 AND subject = $2")
                .bind(account.provider)
                .bind(account.subject)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(row) = linked {
            let id: i64 = row.try_get(0)?;
            let mut user = user_by_id(&mut tx, id).await?;
            // The provider is the source of truth for the email: a changed one is stored (and
            // the snapshot reloaded), unless another user has it.
            if let Some(u) = user.as_ref().filter(|u| u.email != account.email) {
                let taken = sqlx::query("SELECT 1 FROM users WHERE email = $1 AND id <> $2")
                    .bind(account.email)
                    .bind(u.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if taken.is_some() {
                    tx.rollback().await?;
                    return Ok(LinkOutcome::EmailTakenByAnother);
                }
                sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
                    .bind(account.email)
                    .bind(u.id)
                    .execute(&mut *tx)
                    .await?;
                bump_version(&mut tx, self.dialect, &Change::Policy).await?;
                tracing::info!(user_id = u.id, "user's email updated from the provider");
                user = user_by_id(&mut tx, id).await?;
            }
            tx.commit().await?;
            return Ok(match user {
                Some(user) => LinkOutcome::User {
                    user,
                    created: false,
                },
                // ON DELETE CASCADE removes links with their user; unreachable in practice.
                None => LinkOutcome::EmailLinkedElsewhere,
            });
        }
        let by_email = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(account.email)
            .fetch_optional(&mut *tx)
            .await?;
        let (id, created) = match by_email {
            Some(row) => {
                let id: i64 = row.try_get(0)?;
                let other = sqlx::query(
                    "SELECT 1 FROM user_identities WHERE provider = $1 AND user_id = $2",
                )
                .bind(account.provider)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                if other.is_some() {
                    tx.rollback().await?;
                    return Ok(LinkOutcome::EmailLinkedElsewhere);
                }
                (id, false)
            }
            None => {
                let row = sqlx::query(
                    "INSERT INTO users (email, name, disabled, created_at) VALUES ($1, $2, 0, $3) RETURNING id",
                )
                .bind(account.email)
                .bind(account.name)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let id: i64 = row.try_get(0)?;
                for role in default_roles {
                    sqlx::query(
                        "INSERT INTO user_roles (user_id, role_id) SELECT $1, id FROM roles WHERE name = $2",
                    )
                    .bind(id)
                    .bind(role)
                    .execute(&mut *tx)
                    .await?;
                }
                (id, true)
            }
        };
        sqlx::query(
            "INSERT INTO user_identities (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(account.provider)
        .bind(account.subject)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        bump_version(&mut tx, self.dialect, &Change::UserTokens(id)).await?;
        let user = user_by_id(&mut tx, id).await?;
        tx.commit().await?;
        Ok(match user {
            Some(user) => LinkOutcome::User { user, created },
            None => LinkOutcome::EmailLinkedElsewhere,
        })
    }

    async fn login_user(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        user_by_id(&mut conn, id).await
    }

    async fn create_session(
        &self,
        id: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
        refresh: Option<&TokenDigest>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some(refresh) = refresh {
            sqlx::query(
                "INSERT INTO refresh_tokens (digest, session_id, created_at) VALUES ($1, $2, $3)",
            )
            .bind(hex(refresh))
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_refresh(
        &self,
        session_id: &str,
        refresh: &TokenDigest,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (digest, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(hex(refresh))
        .bind(session_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        let row = sqlx::query(sessions_where!("WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(session_row).transpose()
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenDigest,
        next: &TokenDigest,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        // Claiming the token and reading its session are one statement: two concurrent uses
        // cannot both see it unused.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE digest = $2 AND used_at IS NULL RETURNING session_id",
        )
        .bind(now)
        .bind(hex(presented))
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match claimed {
            Some(row) => {
                let session_id: String = row.try_get(0)?;
                let live = sqlx::query(
                    "SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
                )
                .bind(&session_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                if live.is_none() {
                    RefreshOutcome::Refused
                } else {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (digest, session_id, created_at) VALUES ($1, $2, $3)",
                    )
                    .bind(hex(next))
                    .bind(&session_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    RefreshOutcome::Rotated { session_id }
                }
            }
            None => {
                let used = sqlx::query("SELECT session_id FROM refresh_tokens WHERE digest = $1")
                    .bind(hex(presented))
                    .fetch_optional(&mut *tx)
                    .await?;
                match used {
                    Some(row) => {
                        let session_id: String = row.try_get(0)?;
                        revoke_in(&mut tx, self, &session_id, "refresh token reused", now).await?;
                        RefreshOutcome::Reused { session_id }
                    }
                    None => RefreshOutcome::Refused,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn insert_handoff(
        &self,
        code: &TokenDigest,
        session_id: &str,
        origin: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO handoff_codes (digest, session_id, origin, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hex(code))
        .bind(session_id)
        .bind(origin)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_handoff(
        &self,
        code: &TokenDigest,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "UPDATE handoff_codes SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at >= $1 \
             RETURNING session_id, origin",
        )
        .bind(now)
        .bind(hex(code))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            None => Ok(None),
        }
    }

    async fn revoke_session(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let found = revoke_in(&mut tx, self, id, reason, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn revoke_user_sessions(&self, email: &str, now: i64) -> Result<usize, StoreError> {
        let email = email.to_ascii_lowercase();
        let mut tx = self.begin_write().await?;
        let user = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(user) = user else {
            tx.rollback().await?;
            return Err(StoreError::UnknownUser { email });
        };
        let ids = sqlx::query(
            "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
        )
        .bind(user.try_get::<i64, _>(0)?)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
        for id in &ids {
            revoke_in(&mut tx, self, id, "revoked by an operator", now).await?;
        }
        tx.commit().await?;
        Ok(ids.len())
    }

    async fn list_sessions(&self, email: Option<&str>) -> Result<Vec<SessionInfo>, StoreError> {
        let rows = match email {
            Some(email) => {
                sqlx::query(sessions_where!(
                    "WHERE u.email = $1 ORDER BY s.created_at, s.id"
                ))
                .bind(email.to_ascii_lowercase())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sessions_where!("ORDER BY s.created_at, s.id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(session_row).collect()
    }
}
