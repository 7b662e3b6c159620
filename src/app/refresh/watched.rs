//! The login endpoints' store, watched: every call's outcome is reported to `StoreHealth`, so
//! a session lookup or sign-in that cannot reach the database flips `store_reachable` like a
//! failed refresh does. Nothing else changes: each call goes straight to the SQL store.

use crate::app::refresh::health::StoreHealth;
use crate::identity::TokenDigest;
use crate::store::{
    AccountLink, LinkOutcome, LoginStore, RefreshOutcome, SessionInfo, SqlStore, StoreError,
    UserRecord,
};

pub(in crate::app) struct WatchedLogin {
    pub store: SqlStore,
    pub health: StoreHealth,
}

const DURING: &str = "serving a sign-in or session";

#[async_trait::async_trait]
impl LoginStore for WatchedLogin {
    async fn link_account(
        &self,
        account: &AccountLink<'_>,
        default_roles: &[String],
        now: i64,
    ) -> Result<LinkOutcome, StoreError> {
        self.health
            .call(DURING, self.store.link_account(account, default_roles, now))
            .await
    }

    async fn login_user(&self, id: i64) -> Result<Option<UserRecord>, StoreError> {
        self.health.call(DURING, self.store.login_user(id)).await
    }

    async fn create_session(
        &self,
        id: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
        refresh: Option<&TokenDigest>,
    ) -> Result<(), StoreError> {
        self.health
            .call(
                DURING,
                self.store
                    .create_session(id, user_id, now, expires_at, refresh),
            )
            .await
    }

    async fn add_refresh(
        &self,
        session_id: &str,
        refresh: &TokenDigest,
        now: i64,
    ) -> Result<(), StoreError> {
        self.health
            .call(DURING, self.store.add_refresh(session_id, refresh, now))
            .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        self.health.call(DURING, self.store.session(id)).await
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenDigest,
        next: &TokenDigest,
        now: i64,
    ) -> Result<RefreshOutcome, StoreError> {
        self.health
            .call(DURING, self.store.rotate_refresh(presented, next, now))
            .await
    }

    async fn insert_handoff(
        &self,
        code: &TokenDigest,
        session_id: &str,
        origin: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.health
            .call(
                DURING,
                self.store
                    .insert_handoff(code, session_id, origin, expires_at),
            )
            .await
    }

    async fn take_handoff(
        &self,
        code: &TokenDigest,
        now: i64,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.health
            .call(DURING, self.store.take_handoff(code, now))
            .await
    }

    async fn revoke_session(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        self.health
            .call(DURING, self.store.revoke_session(id, reason, now))
            .await
    }

    async fn revoke_user_sessions(&self, email: &str, now: i64) -> Result<usize, StoreError> {
        self.health
            .call(DURING, self.store.revoke_user_sessions(email, now))
            .await
    }

    async fn list_sessions(&self, email: Option<&str>) -> Result<Vec<SessionInfo>, StoreError> {
        self.health
            .call(DURING, self.store.list_sessions(email))
            .await
    }
}
