//! `PolicyStore` in memory, for tests that need a store but not a database: the reloader,
//! token resolution and the management service run against it. It keeps the rules that matter
//! to decisions the way `SqlStore` does (user ids never reused, tombstones, version bumps,
//! announcements) and lets a test cut it off, count its lookups and hold a lookup in flight.
//! Over 500 lines on purpose: one in-memory state behind the whole `PolicyStore` surface,
//! which the SQL store spreads over four files by statement kind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, watch};

use super::{
    Candidate, CandidatePlan, CandidateStep, Change, ChangeFeed, ChangesSince, NewToken, OwnerRef,
    PolicyPlan, PolicyStore, StoreError, StoredState, TokenInfo, UserRecord, REVOCATION_GRACE_SECS,
};
use crate::identity::api_token::{TokenOwner, TokenRecord};
use crate::identity::TokenDigest;
use crate::policy::{AccountState, PolicyDocument, Subjects, TokenHolder, TokenState, UserState};

#[derive(Debug, Clone)]
enum Owner {
    User(String),
    ServiceAccount(String),
}

#[derive(Debug, Clone)]
struct TokenRow {
    id: String,
    digest: TokenDigest,
    owner: Owner,
    label: String,
    permissions: Option<Vec<String>>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    document: PolicyDocument,
    version: i64,
    user_ids: BTreeMap<String, i64>,
    last_user_id: i64,
    deleted_users: BTreeSet<i64>,
    tokens_valid_after: BTreeMap<i64, i64>,
    /// Revoked JWT id -> the token's `exp`, when known.
    revoked_jtis: BTreeMap<String, Option<i64>>,
    tokens: Vec<TokenRow>,
    changes: BTreeMap<i64, Change>,
    candidate: Option<Candidate>,
    unreachable: bool,
}

/// A store held in memory. Clones share the same state.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    changes: Arc<watch::Sender<i64>>,
    lookups: Arc<AtomicUsize>,
    full_loads: Arc<AtomicUsize>,
    held_lookup: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            state: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
            lookups: Arc::default(),
            full_loads: Arc::default(),
            held_lookup: Arc::default(),
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails with `StoreError::Unavailable` (a database outage).
    pub fn set_unreachable(&self, unreachable: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.unreachable = unreachable;
        }
    }

    /// How many token lookups (`find_token`) reached the store.
    pub fn token_lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Makes the next token lookup wait until the returned sender is used or dropped: a
    /// lookup held in flight, for races with revocations.
    pub fn hold_next_lookup(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut held) = self.held_lookup.lock() {
            *held = Some(rx);
        }
        tx
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let state = self.state.lock().map_err(|_| StoreError::Unavailable)?;
        if state.unreachable {
            return Err(StoreError::Unavailable);
        }
        Ok(state)
    }

    /// How many times the whole state was loaded (`load_state`).
    pub fn full_loads(&self) -> usize {
        self.full_loads.load(Ordering::SeqCst)
    }

    /// Bumps the version, logs what changed and announces it.
    fn bump(&self, state: &mut State, change: Change) -> i64 {
        state.version += 1;
        state.changes.insert(state.version, change);
        self.changes.send_replace(state.version);
        state.version
    }
}

impl State {
    /// Writes `next` as the policy: new users get fresh ids, removed ones are tombstoned and
    /// lose their tokens, as in the SQL store.
    fn write_document(&mut self, mut next: PolicyDocument) {
        next.normalize();
        let kept: BTreeSet<&str> = next.users.iter().map(|u| u.email.as_str()).collect();
        let removed: Vec<String> = self
            .user_ids
            .keys()
            .filter(|e| !kept.contains(e.as_str()))
            .cloned()
            .collect();
        for email in &removed {
            if let Some(id) = self.user_ids.remove(email) {
                self.deleted_users.insert(id);
            }
        }
        for user in &next.users {
            if !self.user_ids.contains_key(&user.email) {
                self.last_user_id += 1;
                let id = self.last_user_id;
                self.user_ids.insert(user.email.clone(), id);
            }
        }
        let accounts: BTreeSet<&str> = next
            .service_accounts
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        self.tokens.retain(|t| match &t.owner {
            Owner::User(email) => kept.contains(email.as_str()),
            Owner::ServiceAccount(name) => accounts.contains(name.as_str()),
        });
        self.document = next;
    }

    fn subjects(&self) -> Subjects {
        let mut subjects = Subjects::default();
        for user in &self.document.users {
            if let Some(id) = self.user_ids.get(&user.email) {
                subjects.insert_user(
                    id.to_string(),
                    UserState {
                        email: user.email.clone(),
                        name: user.name.clone(),
                        disabled: user.disabled,
                        roles: user.roles.clone(),
                        tokens_valid_after: self.tokens_valid_after.get(id).copied(),
                    },
                );
            }
        }
        for account in &self.document.service_accounts {
            let state = AccountState {
                disabled: account.disabled,
                roles: account.roles.clone(),
            };
            subjects.insert_account(account.name.clone(), state);
        }
        for t in &self.tokens {
            let holder = match &t.owner {
                Owner::User(email) => match self.user_ids.get(email) {
                    Some(id) => TokenHolder::User(*id),
                    None => continue,
                },
                Owner::ServiceAccount(name) => TokenHolder::ServiceAccount(name.clone()),
            };
            let state = TokenState {
                id: t.id.clone(),
                holder,
                limit: t.permissions.clone(),
                expires_at: t.expires_at,
                revoked: t.revoked_at.is_some(),
            };
            subjects.insert_token(t.digest, state);
        }
        for id in &self.deleted_users {
            subjects.mark_deleted(id.to_string());
        }
        let live_after = unix_now() - REVOCATION_GRACE_SECS;
        for (jti, expires_at) in &self.revoked_jtis {
            if expires_at.is_none_or(|exp| exp >= live_after) {
                subjects.revoke_jti(jti.clone());
            }
        }
        subjects
    }
}

struct MemoryChanges(watch::Receiver<i64>);

#[async_trait::async_trait]
impl ChangeFeed for MemoryChanges {
    async fn next(&mut self) -> Result<Option<i64>, StoreError> {
        self.0
            .changed()
            .await
            .map_err(|_| StoreError::Unavailable)?;
        Ok(Some(*self.0.borrow_and_update()))
    }
}

fn unix_now() -> i64 {
    crate::value::UnixTime::now_or_epoch().as_secs()
}

fn owner_name(owner: &Owner) -> String {
    match owner {
        Owner::User(email) => email.clone(),
        Owner::ServiceAccount(name) => format!("service-account:{name}"),
    }
}

#[async_trait::async_trait]
impl PolicyStore for MemoryStore {
    async fn policy_version(&self) -> Result<i64, StoreError> {
        Ok(self.state()?.version)
    }

    async fn load_policy(&self) -> Result<(PolicyDocument, i64), StoreError> {
        let s = self.state()?;
        Ok((s.document.clone(), s.version))
    }

    async fn load_state(&self) -> Result<StoredState, StoreError> {
        self.full_loads.fetch_add(1, Ordering::SeqCst);
        let s = self.state()?;
        let rules = PolicyDocument {
            permissions: s.document.permissions.clone(),
            roles: s.document.roles.clone(),
            ..PolicyDocument::default()
        };
        Ok(StoredState {
            document: rules,
            subjects: s.subjects(),
            version: s.version,
            candidate: s.candidate.clone(),
        })
    }

    async fn changes_since(&self, version: i64, until: i64) -> Result<ChangesSince, StoreError> {
        let s = self.state()?;
        Ok(((version + 1)..=until)
            .map(|v| s.changes.get(&v).cloned())
            .collect())
    }

    async fn load_user(&self, id: i64) -> Result<Option<UserState>, StoreError> {
        Ok(self.state()?.subjects().user(&id.to_string()).cloned())
    }

    async fn load_token(&self, id: &str) -> Result<Option<([u8; 32], TokenState)>, StoreError> {
        let s = self.state()?;
        let Some(row) = s.tokens.iter().find(|t| t.id == id) else {
            return Ok(None);
        };
        Ok(s.subjects()
            .token(&row.digest)
            .cloned()
            .map(|t| (row.digest, t)))
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        drop(self.state()?);
        Ok(Some(Box::new(MemoryChanges(self.changes.subscribe()))))
    }

    async fn update_policy(&self, plan: PolicyPlan<'_>) -> Result<i64, StoreError> {
        let mut s = self.state()?;
        let Some(next) = plan(&s.document, s.version)? else {
            return Ok(s.version);
        };
        s.write_document(next);
        Ok(self.bump(&mut s, Change::Policy))
    }

    async fn load_candidate(&self) -> Result<Option<Candidate>, StoreError> {
        Ok(self.state()?.candidate.clone())
    }

    async fn update_candidate(&self, plan: CandidatePlan<'_>) -> Result<i64, StoreError> {
        let mut s = self.state()?;
        match plan(&s.document, s.version, s.candidate.as_ref())? {
            CandidateStep::Nothing => return Ok(s.version),
            CandidateStep::Store(c) => s.candidate = Some(c),
            CandidateStep::Discard => s.candidate = None,
            CandidateStep::Promote(next) => {
                s.write_document(next);
                s.candidate = None;
            }
        }
        Ok(self.bump(&mut s, Change::Policy))
    }

    async fn find_user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let s = self.state()?;
        let email = email.to_ascii_lowercase();
        let Some(user) = s.document.users.iter().find(|u| u.email == email) else {
            return Ok(None);
        };
        Ok(s.user_ids.get(&email).map(|id| UserRecord {
            id: *id,
            email: email.clone(),
            name: user.name.clone(),
            disabled: user.disabled,
            roles: user.roles.clone(),
        }))
    }

    async fn revoke_jti(&self, jti: &str, expires_at: Option<i64>) -> Result<(), StoreError> {
        let mut s = self.state()?;
        s.revoked_jtis.entry(jti.to_owned()).or_insert(expires_at);
        let live_after = unix_now() - REVOCATION_GRACE_SECS;
        s.revoked_jtis
            .retain(|_, exp| exp.is_none_or(|exp| exp >= live_after));
        self.bump(&mut s, Change::Jti(jti.to_owned()));
        Ok(())
    }

    async fn revoke_user_tokens(&self, email: &str, now: i64) -> Result<(), StoreError> {
        let mut s = self.state()?;
        let email = email.to_ascii_lowercase();
        let Some(id) = s.user_ids.get(&email).copied() else {
            return Err(StoreError::UnknownUser { email });
        };
        s.tokens_valid_after.insert(id, now);
        self.bump(&mut s, Change::UserTokens(id));
        Ok(())
    }

    async fn insert_token(&self, token: NewToken<'_>) -> Result<(), StoreError> {
        let mut s = self.state()?;
        let owner = match token.owner {
            OwnerRef::User(email) => {
                let email = email.to_ascii_lowercase();
                if !s.user_ids.contains_key(&email) {
                    return Err(StoreError::UnknownUser { email });
                }
                Owner::User(email)
            }
            OwnerRef::ServiceAccount(name) => {
                if !s.document.service_accounts.iter().any(|a| a.name == name) {
                    return Err(StoreError::UnknownServiceAccount {
                        name: name.to_owned(),
                    });
                }
                Owner::ServiceAccount(name.to_owned())
            }
        };
        s.tokens.push(TokenRow {
            id: token.id.to_owned(),
            digest: token.digest,
            owner,
            label: token.label.to_owned(),
            permissions: token.permissions.map(<[String]>::to_vec),
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: None,
            last_used_at: None,
        });
        self.bump(&mut s, Change::Token(token.id.to_owned()));
        Ok(())
    }

    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let s = self.state()?;
        let wanted = owner.map(str::to_ascii_lowercase);
        Ok(s.tokens
            .iter()
            .filter(|t| match (&wanted, &t.owner) {
                (None, _) => true,
                (Some(w), Owner::User(e)) => w == e,
                (Some(w), Owner::ServiceAccount(n)) => w == n,
            })
            .map(|t| TokenInfo {
                id: t.id.clone(),
                owner: owner_name(&t.owner),
                label: t.label.clone(),
                permissions: t.permissions.clone(),
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
                last_used_at: t.last_used_at,
            })
            .collect())
    }

    async fn revoke_token(&self, id: &str) -> Result<(), StoreError> {
        let mut s = self.state()?;
        let Some(token) = s.tokens.iter_mut().find(|t| t.id == id) else {
            return Err(StoreError::UnknownToken { id: id.to_owned() });
        };
        if token.revoked_at.is_none() {
            token.revoked_at = Some(unix_now());
            self.bump(&mut s, Change::Token(id.to_owned()));
        }
        Ok(())
    }

    async fn record_token_use(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let mut s = self.state()?;
        for (id, at) in uses {
            if let Some(t) = s.tokens.iter_mut().find(|t| &t.id == id) {
                t.last_used_at = Some(t.last_used_at.map_or(*at, |l| l.max(*at)));
            }
        }
        Ok(())
    }

    async fn find_token(&self, digest: &TokenDigest) -> Result<Option<TokenRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        // Read now, answer when released: a held lookup answers with what it read before.
        let found = self.read_token(digest);
        let held = self.held_lookup.lock().ok().and_then(|mut h| h.take());
        if let Some(gate) = held {
            let _ = gate.await;
        }
        found
    }
}

impl MemoryStore {
    fn read_token(&self, digest: &TokenDigest) -> Result<Option<TokenRecord>, StoreError> {
        let s = self.state()?;
        let Some(t) = s.tokens.iter().find(|t| &t.digest == digest) else {
            return Ok(None);
        };
        let owner = match &t.owner {
            Owner::User(email) => {
                let user = s.document.users.iter().find(|u| &u.email == email);
                let id = s.user_ids.get(email).copied();
                match (user, id) {
                    (Some(u), Some(id)) => TokenOwner::User {
                        id,
                        email: email.clone(),
                        name: u.name.clone(),
                        disabled: u.disabled,
                        roles: u.roles.clone(),
                    },
                    _ => return Err(StoreError::TokenWithoutOwner { id: t.id.clone() }),
                }
            }
            Owner::ServiceAccount(name) => {
                let Some(a) = s.document.service_accounts.iter().find(|a| &a.name == name) else {
                    return Err(StoreError::TokenWithoutOwner { id: t.id.clone() });
                };
                TokenOwner::ServiceAccount {
                    name: name.clone(),
                    disabled: a.disabled,
                    roles: a.roles.clone(),
                }
            }
        };
        Ok(Some(TokenRecord {
            id: t.id.clone(),
            digest: t.digest,
            owner,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            permissions: t.permissions.clone(),
        }))
    }
}
