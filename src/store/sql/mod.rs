//! `PolicyStore` over SQL: one implementation for the embedded SQLite default and PostgreSQL
//! through sqlx's `Any` driver. Queries use `$n` placeholders and portable types
//! (BIGINT/INTEGER, TEXT) so the same statements run on both; migrations are per dialect.
//! Every write is one transaction that first takes the policy-version row lock, so concurrent
//! writers serialize, and bumps the version (announced with `NOTIFY` on PostgreSQL).

mod candidate;
mod gc;
mod login;
mod read;
mod tokens;
mod write;

use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

use super::{
    Candidate, CandidatePlan, Change, ChangeFeed, ChangesSince, NewToken, PolicyPlan, PolicyStore,
    StoreError, StoredState, TokenInfo, UserRecord,
};
use crate::identity::api_token::TokenRecord;
use crate::identity::TokenDigest;
use crate::policy::PolicyDocument;
use crate::policy::{TokenState, UserState};

pub use gc::GC_LOCK_KEY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The PostgreSQL channel every policy change is announced on.
pub const CHANGE_CHANNEL: &str = "portcullis_policy";

/// How long a call waits for a connection before the store counts as unreachable.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often a sidecar on SQLite reads the database's `PRAGMA data_version` to notice a change
/// committed by another process (the CLI, another sidecar): SQLite has no `NOTIFY`, and the
/// pragma is a read of a counter in memory, no table and no lock.
pub const SQLITE_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    /// For LISTEN on PostgreSQL; holds credentials, so `Debug` never prints it.
    url: Arc<str>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// Wall-clock seconds for audit columns (created, revoked, deleted at); decisions never read
/// them. A clock before 1970 records 0.
fn now_unix() -> i64 {
    crate::value::UnixTime::now_or_epoch().as_secs()
}

/// A stored comma-separated list (token limits).
fn split_list(s: Option<String>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn text(row: &sqlx::any::AnyRow, i: usize) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(i)?)
}

impl SqlStore {
    /// Connects; a SQLite file is created if missing. PostgreSQL connects on first use, so a
    /// sidecar can start while the database is down.
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
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A slow acquire is an outage or its end, which the store's health reports once
            // (`policy store unreachable` / `reachable again`); sqlx would warn on each one.
            .acquire_slow_threshold(ACQUIRE_TIMEOUT);
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
            Dialect::Postgres => pool_options.connect_lazy_with(options),
        };
        Ok(SqlStore {
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

    /// Runs a statement as given; for tests that need to corrupt or inspect the store.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }

    /// One housekeeping round at `now` (unix seconds): removes the rows that can no longer
    /// matter, as one leader (`store::gc`, `sql::gc`). The policy version is not bumped.
    pub async fn collect_garbage(&self, now: i64) -> Result<crate::store::GcOutcome, StoreError> {
        gc::collect(self, now).await
    }

    /// A transaction that writes. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads before it writes fails with "database is
    /// locked", without waiting, when another connection (a sidecar's last-used writer, a
    /// CLI) commits in between (WAL snapshots); an immediate one waits its busy timeout.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// A read-only transaction with one consistent view of the whole store.
    async fn begin_read(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }
}

/// Wakes on policy changes announced by PostgreSQL (`LISTEN`/`NOTIFY`). A lost connection is
/// an error at once (never a silent reconnect that could wait out a pool timeout), so the
/// reloader refreshes right away and finds out whether the database itself is gone.
struct PgChanges(sqlx::postgres::PgListener);

#[async_trait::async_trait]
impl ChangeFeed for PgChanges {
    async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        match self.0.try_recv().await? {
            Some(n) => Ok(Some(n.payload().parse().unwrap_or(0))),
            None => Err(StoreError::ListenerLost),
        }
    }
}

/// Wakes on changes committed to a SQLite database by any other connection: on a connection of
/// its own (which never writes), `PRAGMA data_version` changes exactly when another connection
/// has committed, in this process or another. Read every [`SQLITE_WATCH_INTERVAL`]; a change
/// wakes the reloader, which reads the version and loads only if it moved.
struct SqliteChanges {
    conn: sqlx::SqliteConnection,
    seen: i64,
    tick: tokio::time::Interval,
}

impl SqliteChanges {
    async fn open(url: &str) -> Result<Self, StoreError> {
        use sqlx::ConnectOptions as _;
        let options: sqlx::sqlite::SqliteConnectOptions =
            url.parse().map_err(StoreError::Connect)?;
        let mut conn = options.connect().await.map_err(StoreError::Connect)?;
        let seen = data_version(&mut conn).await?;
        let mut tick = tokio::time::interval(SQLITE_WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(SqliteChanges { conn, seen, tick })
    }
}

async fn data_version(conn: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(conn)
        .await?)
}

#[async_trait::async_trait]
impl ChangeFeed for SqliteChanges {
    async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        loop {
            self.tick.tick().await;
            let now = data_version(&mut self.conn).await?;
            if now != self.seen {
                self.seen = now;
                // The version is read by the refresh it wakes.
                return Ok(None);
            }
        }
    }
}

/// Versions kept in the change log; a sidecar further behind reloads everything.
const CHANGE_LOG_VERSIONS: i64 = 10_000;

/// Announces a change: logs what it changed under the new version (so sidecars can patch
/// their snapshot) and, on PostgreSQL, notifies them.
async fn bump_version(
    conn: &mut AnyConnection,
    dialect: Dialect,
    change: &Change,
) -> Result<i64, StoreError> {
    let row = sqlx::query("UPDATE policy_meta SET version = version + 1, updated_at = $1 WHERE id = 1 RETURNING version")
        .bind(now_unix())
        .fetch_one(&mut *conn)
        .await?;
    let version = row.try_get::<i64, _>(0)?;
    let (kind, subject) = match change {
        Change::Policy => ("policy", String::new()),
        Change::Jti(jti) => ("jti", jti.clone()),
        Change::UserTokens(id) => ("user", id.to_string()),
        Change::Token(id) => ("token", id.clone()),
    };
    sqlx::query("INSERT INTO policy_changes (version, kind, subject) VALUES ($1, $2, $3)")
        .bind(version)
        .bind(kind)
        .bind(subject)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM policy_changes WHERE version <= $1")
        .bind(version - CHANGE_LOG_VERSIONS)
        .execute(&mut *conn)
        .await?;
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

#[async_trait::async_trait]
impl PolicyStore for SqlStore {
    async fn policy_version(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT version FROM policy_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    async fn load_policy(&self) -> Result<(PolicyDocument, i64), StoreError> {
        let mut tx = self.begin_read().await?;
        let loaded = read::document(&mut tx).await?;
        tx.commit().await?;
        Ok(loaded)
    }

    async fn load_state(&self) -> Result<StoredState, StoreError> {
        let mut tx = self.begin_read().await?;
        let (document, version) = read::rules(&mut tx).await?;
        let subjects = read::subjects(&mut tx).await?;
        let candidate = candidate::load(&mut tx).await?;
        tx.commit().await?;
        Ok(StoredState {
            document,
            subjects,
            version,
            candidate,
        })
    }

    async fn changes_since(&self, version: i64, until: i64) -> Result<ChangesSince, StoreError> {
        read::changes(&self.pool, version, until).await
    }

    async fn load_user(&self, id: i64) -> Result<Option<UserState>, StoreError> {
        read::user_by_id(&self.pool, id).await
    }

    async fn load_token(&self, id: &str) -> Result<Option<([u8; 32], TokenState)>, StoreError> {
        read::token_by_id(&self.pool, id).await
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        if self.dialect == Dialect::Sqlite {
            // An in-memory database is private to its connection: nothing else can change it.
            if self.url.contains(":memory:") || self.url.contains("mode=memory") {
                return Ok(None);
            }
            return Ok(Some(Box::new(SqliteChanges::open(&self.url).await?)));
        }
        // Its own one-connection pool, bounded like the store's: a database that is down
        // fails the attempt in seconds.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .acquire_slow_threshold(ACQUIRE_TIMEOUT)
            .connect_lazy(&self.url)
            .map_err(StoreError::Connect)?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .map_err(StoreError::Connect)?;
        listener.eager_reconnect(false);
        listener.listen(CHANGE_CHANNEL).await?;
        Ok(Some(Box::new(PgChanges(listener))))
    }

    async fn update_policy(&self, plan: PolicyPlan<'_>) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        // Take the write lock first (a row lock on PostgreSQL, the database lock on SQLite),
        // so the state the plan reads is the state written over.
        sqlx::query("UPDATE policy_meta SET version = version WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let (current, version) = read::document(&mut tx).await?;
        let Some(next) = plan(&current, version)? else {
            tx.rollback().await?;
            return Ok(version);
        };
        write::changes(&mut tx, self.dialect, &current, &next).await?;
        let version = bump_version(&mut tx, self.dialect, &Change::Policy).await?;
        tx.commit().await?;
        Ok(version)
    }

    async fn load_candidate(&self) -> Result<Option<Candidate>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        candidate::load(&mut conn).await
    }

    async fn update_candidate(&self, plan: CandidatePlan<'_>) -> Result<i64, StoreError> {
        candidate::update(self, plan).await
    }

    async fn find_user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        read::user(&self.pool, email).await
    }

    async fn revoke_jti(&self, jti: &str, expires_at: Option<i64>) -> Result<(), StoreError> {
        tokens::revoke_jti(self, jti, expires_at).await
    }

    async fn revoke_user_tokens(&self, email: &str, now: i64) -> Result<(), StoreError> {
        tokens::revoke_user_tokens(self, email, now).await
    }

    async fn insert_token(&self, token: NewToken<'_>) -> Result<(), StoreError> {
        tokens::insert(self, token).await
    }

    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        tokens::list(&self.pool, owner).await
    }

    async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        tokens::revoke(self, id).await
    }

    async fn record_token_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        tokens::record_use(self, uses).await
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<TokenRecord>, StoreError> {
        tokens::find(&self.pool, digest).await
    }
}
