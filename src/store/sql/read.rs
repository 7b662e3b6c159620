//! Reading the store: the policy document, the subjects the request path checks JWTs against,
//! and single users. Each reader takes the connection of a caller's transaction, so a snapshot
//! is built from one consistent view.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AnyPool, Row};

use super::{now_unix, split_list, text};
use crate::policy::document::{Activity, Method, PermissionSpec, ServiceAccountSpec, UserSpec};
use crate::policy::{AccountState, PolicyDocument, Subjects, TokenHolder, TokenState, UserState};
use crate::store::{unhex, Change, StoreError, UserRecord, REVOCATION_GRACE_SECS};

/// The whole policy and its version, normalized.
pub(super) async fn document(
    conn: &mut AnyConnection,
) -> Result<(PolicyDocument, i64), StoreError> {
    let (mut doc, version) = rules(conn).await?;
    users_and_accounts(conn, &mut doc).await?;
    doc.normalize();
    Ok((doc, version))
}

/// The rules alone (permissions, their activities, roles) and the version: what a snapshot
/// compiles. Users and service accounts come with the subjects.
pub(super) async fn rules(conn: &mut AnyConnection) -> Result<(PolicyDocument, i64), StoreError> {
    let version: i64 = sqlx::query("SELECT version FROM policy_meta WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let mut doc = PolicyDocument::default();
    for row in sqlx::query("SELECT name, description FROM permissions")
        .fetch_all(&mut *conn)
        .await?
    {
        let description: Option<String> = row.try_get(1)?;
        doc.permissions.insert(
            text(&row, 0)?,
            PermissionSpec {
                description,
                activities: Vec::new(),
            },
        );
    }
    let grants = sqlx::query(
        "SELECT p.name, a.method, a.path, a.host FROM permission_activities pa \
         JOIN permissions p ON p.id = pa.permission_id JOIN activities a ON a.id = pa.activity_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in grants {
        let (permission, method, path, host) = (
            text(&row, 0)?,
            text(&row, 1)?,
            text(&row, 2)?,
            text(&row, 3)?,
        );
        let Some(method) = Method::parse(&method) else {
            return Err(StoreError::UnknownStoredMethod { permission, method });
        };
        let activity = Activity {
            method,
            path,
            host: (!host.is_empty()).then_some(host),
        };
        if let Some(spec) = doc.permissions.get_mut(&permission) {
            spec.activities.push(activity);
        }
    }
    for row in sqlx::query("SELECT name FROM roles")
        .fetch_all(&mut *conn)
        .await?
    {
        doc.roles.insert(text(&row, 0)?, Vec::new());
    }
    let role_perms = sqlx::query(
        "SELECT r.name, p.name FROM role_permissions rp JOIN roles r ON r.id = rp.role_id JOIN permissions p ON p.id = rp.permission_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in role_perms {
        if let Some(list) = doc.roles.get_mut(&text(&row, 0)?) {
            list.push(text(&row, 1)?);
        }
    }
    doc.normalize();
    Ok((doc, version))
}

/// Adds the stored users and service accounts, with their roles, to `doc`.
async fn users_and_accounts(
    conn: &mut AnyConnection,
    doc: &mut PolicyDocument,
) -> Result<(), StoreError> {
    let mut users: BTreeMap<String, UserSpec> = BTreeMap::new();
    for row in sqlx::query("SELECT email, name, disabled FROM users")
        .fetch_all(&mut *conn)
        .await?
    {
        let email = text(&row, 0)?;
        let spec = UserSpec {
            email: email.clone(),
            name: row.try_get(1)?,
            disabled: row.try_get::<i64, _>(2)? != 0,
            roles: Vec::new(),
        };
        users.insert(email, spec);
    }
    let user_roles =
        sqlx::query("SELECT u.email, r.name FROM user_roles ur JOIN users u ON u.id = ur.user_id JOIN roles r ON r.id = ur.role_id")
            .fetch_all(&mut *conn)
            .await?;
    for row in user_roles {
        if let Some(user) = users.get_mut(&text(&row, 0)?) {
            user.roles.push(text(&row, 1)?);
        }
    }
    doc.users = users.into_values().collect();
    let mut accounts: BTreeMap<String, ServiceAccountSpec> = BTreeMap::new();
    for row in sqlx::query("SELECT name, description, disabled FROM service_accounts")
        .fetch_all(&mut *conn)
        .await?
    {
        let name = text(&row, 0)?;
        let spec = ServiceAccountSpec {
            name: name.clone(),
            description: row.try_get(1)?,
            disabled: row.try_get::<i64, _>(2)? != 0,
            roles: Vec::new(),
        };
        accounts.insert(name, spec);
    }
    let sa_roles = sqlx::query(
        "SELECT s.name, r.name FROM service_account_roles sr \
         JOIN service_accounts s ON s.id = sr.service_account_id JOIN roles r ON r.id = sr.role_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in sa_roles {
        if let Some(sa) = accounts.get_mut(&text(&row, 0)?) {
            sa.roles.push(text(&row, 1)?);
        }
    }
    doc.service_accounts = accounts.into_values().collect();
    Ok(())
}

/// Everything the request path checks callers against: users by id (the JWT `sub`) with their
/// current roles, service accounts, API tokens by digest, deleted user ids, revoked JWT ids.
pub(super) async fn subjects(conn: &mut AnyConnection) -> Result<Subjects, StoreError> {
    let mut subjects = Subjects::default();
    for row in sqlx::query(&format!("SELECT id, {USER_COLUMNS} FROM users"))
        .fetch_all(&mut *conn)
        .await?
    {
        let id: i64 = row.try_get(0)?;
        subjects.insert_user(id.to_string(), user_state(&row, 1)?);
    }
    let rows = sqlx::query(
        "SELECT ur.user_id, r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let id: i64 = row.try_get(0)?;
        if let Some(user) = subjects.user_mut(&id.to_string()) {
            user.roles.push(text(&row, 1)?);
        }
    }
    for row in sqlx::query("SELECT name, disabled FROM service_accounts")
        .fetch_all(&mut *conn)
        .await?
    {
        let state = AccountState {
            disabled: row.try_get::<i64, _>(1)? != 0,
            roles: Vec::new(),
        };
        subjects.insert_account(text(&row, 0)?, state);
    }
    let rows = sqlx::query(
        "SELECT s.name, r.name FROM service_account_roles x \
         JOIN service_accounts s ON s.id = x.service_account_id JOIN roles r ON r.id = x.role_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        if let Some(account) = subjects.account_mut(&text(&row, 0)?) {
            account.roles.push(text(&row, 1)?);
        }
    }
    for row in sqlx::query(&format!("SELECT {TOKEN_COLUMNS} {TOKEN_FROM}"))
        .fetch_all(&mut *conn)
        .await?
    {
        let (digest, state) = token_state(&row)?;
        subjects.insert_token(digest, state);
    }
    for row in sqlx::query("SELECT id FROM deleted_users")
        .fetch_all(&mut *conn)
        .await?
    {
        subjects.mark_deleted(row.try_get::<i64, _>(0)?.to_string());
    }
    // Only the revocations of tokens a sidecar could still accept.
    for row in
        sqlx::query("SELECT jti FROM revoked_jtis WHERE expires_at IS NULL OR expires_at >= $1")
            .bind(now_unix() - REVOCATION_GRACE_SECS)
            .fetch_all(&mut *conn)
            .await?
    {
        subjects.revoke_jti(text(&row, 0)?);
    }
    Ok(subjects)
}

/// The user columns `user_state` reads, in its order.
const USER_COLUMNS: &str = "email, name, disabled, tokens_valid_after";

/// A user's state from `USER_COLUMNS` starting at column `at` (roles are added after).
fn user_state(row: &sqlx::any::AnyRow, at: usize) -> Result<UserState, StoreError> {
    Ok(UserState {
        email: text(row, at)?,
        name: row.try_get(at + 1)?,
        disabled: row.try_get::<i64, _>(at + 2)? != 0,
        roles: Vec::new(),
        tokens_valid_after: row.try_get(at + 3)?,
    })
}

/// The token columns `token_state` reads, in its order, and where they come from.
const TOKEN_COLUMNS: &str =
    "t.id, t.digest, t.user_id, s.name, t.expires_at, t.revoked_at, t.permissions";
const TOKEN_FROM: &str =
    "FROM api_tokens t LEFT JOIN service_accounts s ON s.id = t.service_account_id";

/// A token's digest and state from `TOKEN_COLUMNS`.
fn token_state(row: &sqlx::any::AnyRow) -> Result<([u8; 32], TokenState), StoreError> {
    let id = text(row, 0)?;
    let Some(digest) = unhex(&text(row, 1)?) else {
        return Err(StoreError::MalformedDigest { id });
    };
    let holder = match (row.try_get::<Option<i64>, _>(2)?, row.try_get(3)?) {
        (Some(user), None) => TokenHolder::User(user),
        (None, Some(account)) => TokenHolder::ServiceAccount(account),
        _ => return Err(StoreError::TokenWithoutOwner { id }),
    };
    let state = TokenState {
        id,
        holder,
        expires_at: row.try_get(4)?,
        revoked: row.try_get::<Option<i64>, _>(5)?.is_some(),
        limit: split_list(row.try_get(6)?),
    };
    Ok((digest, state))
}

/// One user's current state by id, with roles.
pub(super) async fn user_by_id(pool: &AnyPool, id: i64) -> Result<Option<UserState>, StoreError> {
    let Some(row) = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let mut state = user_state(&row, 0)?;
    for row in sqlx::query(
        "SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    {
        state.roles.push(text(&row, 0)?);
    }
    Ok(Some(state))
}

/// One token's digest and current state by token id.
pub(super) async fn token_by_id(
    pool: &AnyPool,
    id: &str,
) -> Result<Option<([u8; 32], TokenState)>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} {TOKEN_FROM} WHERE t.id = $1");
    match sqlx::query(&sql).bind(id).fetch_optional(pool).await? {
        Some(row) => Ok(Some(token_state(&row)?)),
        None => Ok(None),
    }
}

/// What each version in `(version, until]` changed, or `None` when one is not logged.
pub(super) async fn changes(
    pool: &AnyPool,
    version: i64,
    until: i64,
) -> Result<Option<Vec<Change>>, StoreError> {
    let rows = sqlx::query(
        "SELECT version, kind, subject FROM policy_changes WHERE version > $1 AND version <= $2 \
         ORDER BY version",
    )
    .bind(version)
    .bind(until)
    .fetch_all(pool)
    .await?;
    if i64::try_from(rows.len()).ok() != until.checked_sub(version) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let subject = text(&row, 2)?;
        out.push(match text(&row, 1)?.as_str() {
            "jti" => Change::Jti(subject),
            "token" => Change::Token(subject),
            "user" => match subject.parse() {
                Ok(id) => Change::UserTokens(id),
                Err(_) => Change::Policy,
            },
            _ => Change::Policy,
        });
    }
    Ok(Some(out))
}

/// A stored user by email (case-insensitive), with their roles.
pub(super) async fn user(pool: &AnyPool, email: &str) -> Result<Option<UserRecord>, StoreError> {
    let email = email.to_ascii_lowercase();
    let Some(row) = sqlx::query("SELECT id, email, name, disabled FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let id: i64 = row.try_get(0)?;
    let roles = sqlx::query("SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.name")
        .bind(id)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(UserRecord {
        id,
        email: row.try_get(1)?,
        name: row.try_get(2)?,
        disabled: row.try_get::<i64, _>(3)? != 0,
        roles,
    }))
}
