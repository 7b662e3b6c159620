//! The policy store: the only module with SQL. One implementation over sqlx's `Any` driver
//! serves both the embedded SQLite default and PostgreSQL; queries use `$n` placeholders and
//! portable types (BIGINT/INTEGER, TEXT) so the same statements run on both. Every write is
//! one transaction that first takes the policy-version row lock, so concurrent applies serialize.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::identity::api_token::{self, LookupError, TokenLookup, TokenOwner, TokenRecord};
use crate::identity::TokenDigest;
use crate::policy::document::{
    Activity, Method, PermissionSpec, PolicyDocument, ServiceAccountSpec, UserSpec, AUTHENTICATED,
    PUBLIC,
};
use crate::policy::{PolicyError, PolicySnapshot, Subjects, UserState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error("the database holds an invalid row: {0}")]
    BadRow(String),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// Who an API token is issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRef<'a> {
    User(&'a str),
    ServiceAccount(&'a str),
}

/// A token as listed: everything but the secret, which is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub owner: String,
    pub label: String,
    pub permissions: Option<Vec<String>>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A newly issued token: the only time the secret exists outside the caller's hands.
#[derive(Clone)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("token", &"**redacted**")
            .finish()
    }
}

fn hex(digest: &TokenDigest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<TokenDigest> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn split_list(s: Option<String>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A stored user, as `jwt mint` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub email: String,
    pub name: Option<String>,
    pub disabled: bool,
    pub roles: Vec<String>,
}

/// What `apply` did (or, on a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub changes: Vec<String>,
    pub version: i64,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// For LISTEN on PostgreSQL; holds credentials, so `Debug` never prints it.
    url: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL channel every policy change is announced on.
pub const CHANGE_CHANNEL: &str = "portcullis_policy";
/// How long a request-path token lookup may wait for the store before it is a 503.
pub const TOKEN_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// Wakes on policy changes announced by PostgreSQL (`LISTEN`/`NOTIFY`).
pub struct ChangeListener(sqlx::postgres::PgListener);

impl ChangeListener {
    /// The next announced version; `Ok(None)` when the connection was lost and re-established
    /// (announcements in between may be lost: refresh anyway).
    pub async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .0
            .try_recv()
            .await?
            .map(|n| n.payload().parse().unwrap_or(0)))
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Connects; a SQLite file is created if missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let options: AnyConnectOptions = url.parse().map_err(StoreError::Connect)?;
        let pool_options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(3));
        let pool = match dialect {
            // A local file: open it now, so a bad path is reported at once.
            Dialect::Sqlite => {
                let pool = pool_options
                    .connect_with(options)
                    .await
                    .map_err(StoreError::Connect)?;
                // Readers (every sidecar's reload) never block the writer (`policy apply`).
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&pool)
                    .await?;
                pool
            }
            // A server may be down when a sidecar starts: connect on first use, retry after.
            Dialect::Postgres => pool_options.connect_lazy_with(options),
        };
        Ok(Store {
            pool,
            dialect,
            url: url.into(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator.run(&self.pool).await.map_err(StoreError::Migrate)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The current policy version; cheap enough to poll.
    pub async fn policy_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT version FROM policy_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// The whole policy and its version, read in one transaction.
    pub async fn load_policy(&self) -> Result<(PolicyDocument, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let loaded = load_document(&mut tx).await?;
        tx.commit().await?;
        Ok(loaded)
    }

    /// Loads and compiles the current policy.
    pub async fn load_snapshot(&self) -> Result<PolicySnapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let (doc, version) = load_document(&mut tx).await?;
        let subjects = load_subjects(&mut tx).await?;
        tx.commit().await?;
        Ok(PolicySnapshot::compile(&doc, version)?.with_subjects(subjects))
    }

    /// Listens for policy changes (PostgreSQL only; `None` on SQLite, which is polled).
    pub async fn listen(&self) -> Result<Option<ChangeListener>, StoreError> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(StoreError::Connect)?;
        listener.listen(CHANGE_CHANNEL).await?;
        Ok(Some(ChangeListener(listener)))
    }

    /// Revokes one JWT by its `jti`.
    pub async fn revoke_jti(&self, jti: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO revoked_jtis (jti, revoked_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
            .bind(jti)
            .bind(now_unix())
            .execute(&mut *tx)
            .await?;
        bump_version(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes every JWT of a user issued up to now (logout everywhere, compromise).
    pub async fn revoke_user_tokens(&self, email: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE users SET tokens_valid_after = $1 WHERE email = $2")
            .bind(now_unix())
            .bind(email.to_ascii_lowercase())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("no user {email:?}")));
        }
        bump_version(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies a policy file: with `prune` the store becomes exactly the file, otherwise the
    /// file's entries replace those of the same name. Nothing is written when the result would
    /// not compile, when nothing changes, or on a dry run.
    pub async fn apply(
        &self,
        file: &PolicyDocument,
        prune: bool,
        dry_run: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Take the write lock first (a row lock on PostgreSQL, the database lock on SQLite),
        // so the state read below is the state written over.
        sqlx::query("UPDATE policy_meta SET version = version WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let (current, version) = load_document(&mut tx).await?;
        let merged = current.merged_with(file, prune);
        merged.validate().map_err(|problem| PolicyError::Invalid {
            origin: "the policy after this apply".to_owned(),
            problem,
        })?;
        PolicySnapshot::compile(&merged, version + 1)?;
        let changes = current.diff(&merged);
        if changes.is_empty() || dry_run {
            tx.rollback().await?;
            return Ok(ApplyOutcome { changes, version });
        }
        write_changes(&mut tx, self.dialect, &current, &merged).await?;
        let version = bump_version(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(ApplyOutcome { changes, version })
    }

    pub async fn find_user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let email = email.to_ascii_lowercase();
        let Some(row) = sqlx::query("SELECT id, email, name, disabled FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0)?;
        let roles = sqlx::query("SELECT r.name FROM user_roles ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = $1 ORDER BY r.name")
            .bind(id)
            .fetch_all(&self.pool)
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

    /// Issues an API token. A limit must be a subset of what the owner holds now; the token
    /// is returned once and only its digest is kept.
    pub async fn issue_token(
        &self,
        owner: OwnerRef<'_>,
        label: &str,
        expires_at: Option<i64>,
        permissions: Option<&[String]>,
    ) -> Result<IssuedToken, StoreError> {
        let (doc, version) = self.load_policy().await?;
        let (roles, user_id, account_id) = match owner {
            OwnerRef::User(email) => {
                let user = self
                    .find_user(email)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("no user {email:?}")))?;
                (user.roles, Some(user.id), None)
            }
            OwnerRef::ServiceAccount(name) => {
                let sa = doc
                    .service_accounts
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or_else(|| StoreError::NotFound(format!("no service account {name:?}")))?;
                let row = sqlx::query("SELECT id FROM service_accounts WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
                (sa.roles.clone(), None, Some(row.try_get::<i64, _>(0)?))
            }
        };
        if let Some(limit) = permissions {
            let snapshot = PolicySnapshot::compile(&doc, version)?;
            let held = snapshot.grants(true, [], roles.iter().map(String::as_str));
            let held: Vec<&str> = held.ids().map(|id| snapshot.permission_name(id)).collect();
            for p in limit {
                if p != PUBLIC && p != AUTHENTICATED && !held.contains(&p.as_str()) {
                    return Err(StoreError::Refused(format!(
                        "the owner does not hold permission {p:?}"
                    )));
                }
            }
        }
        let token = api_token::generate();
        let id = api_token::generate_id();
        sqlx::query(
            "INSERT INTO api_tokens (id, digest, user_id, service_account_id, label, permissions, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(hex(&crate::identity::digest(&token)))
        .bind(user_id)
        .bind(account_id)
        .bind(label)
        .bind(permissions.map(|p| p.join(",")))
        .bind(now_unix())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(IssuedToken { id, token })
    }

    /// Tokens, optionally of one owner (a user's email or a service account's name).
    pub async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.id, COALESCE(u.email, 'service-account:' || s.name), t.label, t.permissions, t.created_at, \
             t.expires_at, t.revoked_at, t.last_used_at FROM api_tokens t \
             LEFT JOIN users u ON u.id = t.user_id LEFT JOIN service_accounts s ON s.id = t.service_account_id \
             WHERE $1 = '' OR u.email = $1 OR s.name = $1 ORDER BY t.created_at, t.id",
        )
        .bind(owner.map(str::to_ascii_lowercase).unwrap_or_default())
        .fetch_all(&self.pool)
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

    /// Revokes a token and bumps the policy version, so every sidecar forgets it.
    pub async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
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
                None => Err(StoreError::NotFound(format!("no token {id:?}"))),
            };
        }
        bump_version(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records last-used times in one transaction (called in batches, off the request path).
    pub async fn record_token_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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

    async fn find_token_record(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT id, digest, user_id, service_account_id, expires_at, revoked_at, permissions FROM api_tokens WHERE digest = $1",
        )
        .bind(hex(digest))
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let stored = unhex(&text(&row, 1)?)
            .ok_or_else(|| StoreError::BadRow("api token digest".to_owned()))?;
        let user_id: Option<i64> = row.try_get(2)?;
        let account_id: Option<i64> = row.try_get(3)?;
        let owner = match (user_id, account_id) {
            (Some(uid), None) => {
                let u = sqlx::query("SELECT email, name, disabled FROM users WHERE id = $1")
                    .bind(uid)
                    .fetch_one(&self.pool)
                    .await?;
                let roles = names(&self.pool, "SELECT r.name FROM user_roles x JOIN roles r ON r.id = x.role_id WHERE x.user_id = $1", uid).await?;
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
                    .fetch_one(&self.pool)
                    .await?;
                let roles = names(
                    &self.pool,
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
            _ => {
                return Err(StoreError::BadRow(
                    "api token without exactly one owner".to_owned(),
                ))
            }
        };
        Ok(Some(TokenRecord {
            id: text(&row, 0)?,
            digest: stored,
            owner,
            expires_at: row.try_get(4)?,
            revoked_at: row.try_get(5)?,
            permissions: split_list(row.try_get(6)?),
        }))
    }

    /// Runs a statement as given; for tests that need to corrupt or inspect the store.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }
}

/// Announces a change: every sidecar rebuilds its snapshot and forgets cached API tokens.
async fn bump_version(conn: &mut AnyConnection, dialect: Dialect) -> Result<i64, StoreError> {
    let row = sqlx::query("UPDATE policy_meta SET version = version + 1, updated_at = $1 WHERE id = 1 RETURNING version")
        .bind(now_unix())
        .fetch_one(&mut *conn)
        .await?;
    let version = row.try_get::<i64, _>(0)?;
    if dialect == Dialect::Postgres {
        // Delivered at commit, to every listening sidecar.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGE_CHANNEL)
            .bind(version.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(version)
}

fn text(row: &sqlx::any::AnyRow, i: usize) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(i)?)
}

/// Users by id (the JWT `sub`) with their current roles, deleted user ids, and revoked JWT ids.
async fn load_subjects(conn: &mut AnyConnection) -> Result<Subjects, StoreError> {
    let mut subjects = Subjects::default();
    for row in sqlx::query("SELECT id, disabled, tokens_valid_after FROM users")
        .fetch_all(&mut *conn)
        .await?
    {
        let id: i64 = row.try_get(0)?;
        let state = UserState {
            disabled: row.try_get::<i64, _>(1)? != 0,
            roles: Vec::new(),
            tokens_valid_after: row.try_get(2)?,
        };
        subjects.insert_user(id.to_string(), state);
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
    for row in sqlx::query("SELECT id FROM deleted_users")
        .fetch_all(&mut *conn)
        .await?
    {
        subjects.mark_deleted(row.try_get::<i64, _>(0)?.to_string());
    }
    for row in sqlx::query("SELECT jti FROM revoked_jtis")
        .fetch_all(&mut *conn)
        .await?
    {
        subjects.revoke_jti(text(&row, 0)?);
    }
    Ok(subjects)
}

async fn load_document(conn: &mut AnyConnection) -> Result<(PolicyDocument, i64), StoreError> {
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
        let method = Method::parse(&method).ok_or_else(|| {
            StoreError::BadRow(format!(
                "permission {permission:?}: unknown method {method:?}"
            ))
        })?;
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
    doc.normalize();
    Ok((doc, version))
}

async fn names(pool: &AnyPool, sql: &str, id: i64) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(sql).bind(id).fetch_all(pool).await?;
    let mut out: Vec<String> = rows.iter().map(|r| text(r, 0)).collect::<Result<_, _>>()?;
    out.sort();
    Ok(out)
}

#[async_trait::async_trait]
impl TokenLookup for Store {
    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<TokenRecord>, LookupError> {
        match tokio::time::timeout(TOKEN_LOOKUP_TIMEOUT, self.find_token_record(digest)).await {
            Ok(found) => found.map_err(|e| LookupError(crate::error_chain(&e).into())),
            Err(_) => Err(LookupError("token lookup timed out".into())),
        }
    }
}

/// Rows per bulk statement.
const BULK_ROWS: usize = 5_000;

/// A SELECT of text columns `c0`..`c3` from `$1`, a JSON array of arrays: the one way to hand a
/// bulk write to both databases through the `Any` driver (which has no array binds).
fn json_rows(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "SELECT json_extract(value, '$[0]') AS c0, json_extract(value, '$[1]') AS c1, \
             json_extract(value, '$[2]') AS c2, json_extract(value, '$[3]') AS c3 FROM json_each($1)"
        }
        Dialect::Postgres => {
            "SELECT value->>0 AS c0, value->>1 AS c1, value->>2 AS c2, value->>3 AS c3 \
             FROM jsonb_array_elements(CAST($1 AS jsonb))"
        }
    }
}

/// Runs `statement` (which reads its rows from `json_rows`) over `rows`, in chunks.
async fn bulk(
    conn: &mut AnyConnection,
    dialect: Dialect,
    statement: &str,
    rows: &[serde_json::Value],
) -> Result<(), StoreError> {
    let sql = statement.replace("{rows}", json_rows(dialect));
    for chunk in rows.chunks(BULK_ROWS) {
        let json = serde_json::Value::Array(chunk.to_vec()).to_string();
        sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes the difference between `current` and `merged` in a few set-based statements;
/// entities that did not change are not touched, so user ids (the JWT `sub`) stay stable.
async fn write_changes(
    conn: &mut AnyConnection,
    dialect: Dialect,
    current: &PolicyDocument,
    merged: &PolicyDocument,
) -> Result<(), StoreError> {
    use serde_json::json;

    // Permissions and their activities.
    let changed: Vec<_> = merged
        .permissions
        .iter()
        .filter(|(n, s)| current.permissions.get(*n) != Some(*s))
        .collect();
    let rows: Vec<_> = changed
        .iter()
        .map(|(n, s)| json!([n, s.description]))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO permissions (name, description) SELECT c0, c1 FROM ({rows}) j WHERE true \
         ON CONFLICT (name) DO UPDATE SET description = excluded.description",
        &rows,
    )
    .await?;
    let names: Vec<_> = changed.iter().map(|(n, _)| json!([n])).collect();
    bulk(
        conn,
        dialect,
        "DELETE FROM permission_activities WHERE permission_id IN \
         (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)",
        &names,
    )
    .await?;
    let grants: Vec<_> = changed
        .iter()
        .flat_map(|(n, s)| {
            s.activities.iter().map(move |a| {
                json!([
                    n,
                    a.method.as_str(),
                    a.path,
                    a.host.clone().unwrap_or_default()
                ])
            })
        })
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO activities (method, path, host) SELECT c1, c2, c3 FROM ({rows}) j WHERE true \
         ON CONFLICT (method, path, host) DO NOTHING",
        &grants,
    )
    .await?;
    bulk(
        conn,
        dialect,
        "INSERT INTO permission_activities (permission_id, activity_id) SELECT DISTINCT p.id, a.id FROM ({rows}) j \
         JOIN permissions p ON p.name = j.c0 JOIN activities a ON a.method = j.c1 AND a.path = j.c2 AND a.host = j.c3",
        &grants,
    )
    .await?;
    let removed: Vec<_> = current
        .permissions
        .keys()
        .filter(|n| !merged.permissions.contains_key(*n))
        .map(|n| json!([n]))
        .collect();
    for statement in [
        "DELETE FROM permission_activities WHERE permission_id IN \
         (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)",
        "DELETE FROM role_permissions WHERE permission_id IN (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)",
        "DELETE FROM permissions WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ] {
        bulk(conn, dialect, statement, &removed).await?;
    }
    sqlx::query(
        "DELETE FROM activities WHERE id NOT IN (SELECT activity_id FROM permission_activities)",
    )
    .execute(&mut *conn)
    .await?;

    // Roles.
    let changed: Vec<_> = merged
        .roles
        .iter()
        .filter(|(n, p)| current.roles.get(*n) != Some(*p))
        .collect();
    let names: Vec<_> = changed.iter().map(|(n, _)| json!([n])).collect();
    bulk(conn, dialect, "INSERT INTO roles (name) SELECT c0 FROM ({rows}) j WHERE true ON CONFLICT (name) DO NOTHING", &names)
        .await?;
    bulk(
        conn,
        dialect,
        "DELETE FROM role_permissions WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        &names,
    )
    .await?;
    let pairs: Vec<_> = changed
        .iter()
        .flat_map(|(n, ps)| ps.iter().map(move |p| json!([n, p])))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO role_permissions (role_id, permission_id) SELECT r.id, p.id FROM ({rows}) j \
         JOIN roles r ON r.name = j.c0 JOIN permissions p ON p.name = j.c1",
        &pairs,
    )
    .await?;
    let removed: Vec<_> = current
        .roles
        .keys()
        .filter(|n| !merged.roles.contains_key(*n))
        .map(|n| json!([n]))
        .collect();
    for statement in [
        "DELETE FROM role_permissions WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM user_roles WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM service_account_roles WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM roles WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ] {
        bulk(conn, dialect, statement, &removed).await?;
    }

    // Users.
    let before: HashMap<&str, &UserSpec> = current
        .users
        .iter()
        .map(|u| (u.email.as_str(), u))
        .collect();
    let changed: Vec<&UserSpec> = merged
        .users
        .iter()
        .filter(|u| before.get(u.email.as_str()) != Some(u))
        .collect();
    let rows: Vec<_> = changed
        .iter()
        .map(|u| json!([u.email, u.name, i64::from(u.disabled).to_string()]))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO users (email, name, disabled) SELECT c0, c1, CAST(c2 AS BIGINT) FROM ({rows}) j WHERE true \
         ON CONFLICT (email) DO UPDATE SET name = excluded.name, disabled = excluded.disabled",
        &rows,
    )
    .await?;
    let emails: Vec<_> = changed.iter().map(|u| json!([u.email])).collect();
    bulk(
        conn,
        dialect,
        "DELETE FROM user_roles WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)",
        &emails,
    )
    .await?;
    let pairs: Vec<_> = changed
        .iter()
        .flat_map(|u| u.roles.iter().map(move |r| json!([u.email, r])))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM ({rows}) j \
         JOIN users u ON u.email = j.c0 JOIN roles r ON r.name = j.c1",
        &pairs,
    )
    .await?;
    let kept: std::collections::HashSet<&str> =
        merged.users.iter().map(|u| u.email.as_str()).collect();
    let deleted_at = now_unix().to_string();
    let removed: Vec<_> = before
        .keys()
        .filter(|e| !kept.contains(*e))
        .map(|e| json!([e, deleted_at]))
        .collect();
    for statement in [
        // A tombstone: tokens naming a deleted user's id are refused in every mode.
        "INSERT INTO deleted_users (id, email, deleted_at) SELECT u.id, u.email, CAST(j.c1 AS BIGINT) \
         FROM users u JOIN ({rows}) j ON u.email = j.c0 WHERE true ON CONFLICT (id) DO NOTHING",
        "DELETE FROM user_roles WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)",
        "DELETE FROM api_tokens WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)",
        "DELETE FROM users WHERE email IN (SELECT c0 FROM ({rows}) j)",
    ] {
        bulk(conn, dialect, statement, &removed).await?;
    }

    // Service accounts.
    let before: HashMap<&str, &ServiceAccountSpec> = current
        .service_accounts
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let changed: Vec<&ServiceAccountSpec> = merged
        .service_accounts
        .iter()
        .filter(|s| before.get(s.name.as_str()) != Some(s))
        .collect();
    let rows: Vec<_> = changed
        .iter()
        .map(|s| json!([s.name, s.description, i64::from(s.disabled).to_string()]))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO service_accounts (name, description, disabled) SELECT c0, c1, CAST(c2 AS BIGINT) FROM ({rows}) j \
         WHERE true ON CONFLICT (name) DO UPDATE SET description = excluded.description, disabled = excluded.disabled",
        &rows,
    )
    .await?;
    let names: Vec<_> = changed.iter().map(|s| json!([s.name])).collect();
    bulk(
        conn,
        dialect,
        "DELETE FROM service_account_roles WHERE service_account_id IN \
         (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)",
        &names,
    )
    .await?;
    let pairs: Vec<_> = changed
        .iter()
        .flat_map(|s| s.roles.iter().map(move |r| json!([s.name, r])))
        .collect();
    bulk(
        conn,
        dialect,
        "INSERT INTO service_account_roles (service_account_id, role_id) SELECT s.id, r.id FROM ({rows}) j \
         JOIN service_accounts s ON s.name = j.c0 JOIN roles r ON r.name = j.c1",
        &pairs,
    )
    .await?;
    let kept: std::collections::HashSet<&str> = merged
        .service_accounts
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let removed: Vec<_> = before
        .keys()
        .filter(|n| !kept.contains(*n))
        .map(|n| json!([n]))
        .collect();
    for statement in [
        "DELETE FROM service_account_roles WHERE service_account_id IN \
         (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)",
        "DELETE FROM api_tokens WHERE service_account_id IN \
         (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)",
        "DELETE FROM service_accounts WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ] {
        bulk(conn, dialect, statement, &removed).await?;
    }
    Ok(())
}
