//! API tokens and JWT revocations in SQL: insert, list, revoke, record use, and find by digest
//! with the owner as stored now. Token rows keep the SHA-256 digest (hex), never the token.

use sqlx::{AnyPool, Row};

use super::{bump_version, now_unix, split_list, text, SqlStore};
use crate::identity::api_token::{TokenOwner, TokenRecord};
use crate::identity::TokenDigest;
use crate::store::{
    hex, unhex, Change, NewToken, OwnerRef, StoreError, TokenInfo, REVOCATION_GRACE_SECS,
};

pub(super) async fn revoke_jti(
    store: &SqlStore,
    jti: &str,
    expires_at: Option<i64>,
) -> Result<(), StoreError> {
    let now = now_unix();
    let mut tx = store.begin_write().await?;
    sqlx::query(
        "INSERT INTO revoked_jtis (jti, revoked_at, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    // The revocations of tokens no sidecar could accept any more.
    sqlx::query("DELETE FROM revoked_jtis WHERE expires_at < $1")
        .bind(now - REVOCATION_GRACE_SECS)
        .execute(&mut *tx)
        .await?;
    bump_version(&mut tx, store.dialect, &Change::Jti(jti.to_owned())).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn revoke_user_tokens(
    store: &SqlStore,
    email: &str,
    now: i64,
) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    let email = email.to_ascii_lowercase();
    let updated =
        sqlx::query("UPDATE users SET tokens_valid_after = $1 WHERE email = $2 RETURNING id")
            .bind(now)
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(row) = updated else {
        tx.rollback().await?;
        return Err(StoreError::UnknownUser { email });
    };
    let id: i64 = row.try_get(0)?;
    bump_version(&mut tx, store.dialect, &Change::UserTokens(id)).await?;
    tx.commit().await?;
    Ok(())
}

/// Inserts a token and bumps the version (subjects only), so every sidecar loads it.
pub(super) async fn insert(store: &SqlStore, token: NewToken<'_>) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    let (user_id, account_id) = match token.owner {
        OwnerRef::User(email) => {
            let email = email.to_ascii_lowercase();
            let row = sqlx::query("SELECT id FROM users WHERE email = $1")
                .bind(&email)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::UnknownUser { email })?;
            (Some(row.try_get::<i64, _>(0)?), None)
        }
        OwnerRef::ServiceAccount(name) => {
            let row = sqlx::query("SELECT id FROM service_accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownServiceAccount {
                    name: name.to_owned(),
                })?;
            (None, Some(row.try_get::<i64, _>(0)?))
        }
    };
    sqlx::query(
        "INSERT INTO api_tokens (id, digest, user_id, service_account_id, label, permissions, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(token.id)
    .bind(hex(&token.digest))
    .bind(user_id)
    .bind(account_id)
    .bind(token.label)
    .bind(token.permissions.map(|p| p.join(",")))
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(&mut *tx)
    .await?;
    bump_version(&mut tx, store.dialect, &Change::Token(token.id.to_owned())).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list(
    pool: &AnyPool,
    owner: Option<&str>,
) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = sqlx::query(
        "SELECT t.id, COALESCE(u.email, 'service-account:' || s.name), t.label, t.permissions, t.created_at, \
         t.expires_at, t.revoked_at, t.last_used_at FROM api_tokens t \
         LEFT JOIN users u ON u.id = t.user_id LEFT JOIN service_accounts s ON s.id = t.service_account_id \
         WHERE $1 = '' OR u.email = $1 OR s.name = $1 ORDER BY t.created_at, t.id",
    )
    .bind(owner.map(str::to_ascii_lowercase).unwrap_or_default())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                id: text(r, 0)?,
                owner: text(r, 1)?,
                label: text(r, 2)?,
                permissions: split_list(r.try_get(3)?),
                created_at: r.try_get(4)?,
                expires_at: r.try_get(5)?,
                revoked_at: r.try_get(6)?,
                last_used_at: r.try_get(7)?,
            })
        })
        .collect()
}

pub(super) async fn revoke(store: &SqlStore, id: &str) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_unix())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if done == 0 {
        let exists = sqlx::query("SELECT id FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.rollback().await?;
        return match exists {
            Some(_) => Ok(()),
            None => Err(StoreError::UnknownToken { id: id.to_owned() }),
        };
    }
    bump_version(&mut tx, store.dialect, &Change::Token(id.to_owned())).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn record_use(store: &SqlStore, uses: &[(String, i64)]) -> Result<(), StoreError> {
    let mut tx = store.begin_write().await?;
    for (id, at) in uses {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)")
            .bind(*at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn names(pool: &AnyPool, sql: &str, id: i64) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(sql).bind(id).fetch_all(pool).await?;
    let mut out: Vec<String> = rows.iter().map(|r| text(r, 0)).collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

pub(super) async fn find(
    pool: &AnyPool,
    digest: &TokenDigest,
) -> Result<Option<TokenRecord>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT id, digest, user_id, service_account_id, expires_at, revoked_at, permissions FROM api_tokens WHERE digest = $1",
    )
    .bind(hex(digest))
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let id = text(&row, 0)?;
    let Some(stored) = unhex(&text(&row, 1)?) else {
        return Err(StoreError::MalformedDigest { id });
    };
    let user_id: Option<i64> = row.try_get(2)?;
    let account_id: Option<i64> = row.try_get(3)?;
    let owner = match (user_id, account_id) {
        (Some(uid), None) => {
            let u = sqlx::query("SELECT email, name, disabled FROM users WHERE id = $1")
                .bind(uid)
                .fetch_one(pool)
                .await?;
            let roles = names(pool, "SELECT r.name FROM user_roles x JOIN roles r ON r.id = x.role_id WHERE x.user_id = $1", uid).await?;
            TokenOwner::User {
                id: uid,
                email: text(&u, 0)?,
                name: u.try_get(1)?,
                disabled: u.try_get::<i64, _>(2)? != 0,
                roles,
            }
        }
        (None, Some(sid)) => {
            let s = sqlx::query("SELECT name, disabled FROM service_accounts WHERE id = $1")
                .bind(sid)
                .fetch_one(pool)
                .await?;
            let roles = names(
                pool,
                "SELECT r.name FROM service_account_roles x JOIN roles r ON r.id = x.role_id WHERE x.service_account_id = $1",
                sid,
            )
            .await?;
            TokenOwner::ServiceAccount {
                name: text(&s, 0)?,
                disabled: s.try_get::<i64, _>(1)? != 0,
                roles,
            }
        }
        _ => return Err(StoreError::TokenWithoutOwner { id }),
    };
    Ok(Some(TokenRecord {
        id,
        digest: stored,
        owner,
        expires_at: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
        permissions: split_list(row.try_get(6)?),
    }))
}
