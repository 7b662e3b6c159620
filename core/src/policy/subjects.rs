//! Who exists right now, as the request path needs it: users by id (email, name, disabled,
//! current roles, JWTs revoked up to a time), service accounts, API tokens by the SHA-256
//! digest of the token (never the token), the ids of deleted users (never reused) and revoked
//! JWT ids. Carried in the snapshot beside the compiled rules and replaced on its own when only
//! subjects change, so no request ever asks the store who someone is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::document::{ServiceAccountSpec, UserSpec};

/// A stored user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserState {
    pub email: String,
    pub name: Option<String>,
    pub disabled: bool,
    pub roles: Vec<String>,
    /// JWTs of this user issued at or before this time (unix seconds) are revoked.
    pub tokens_valid_after: Option<i64>,
}

/// A stored service account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountState {
    pub disabled: bool,
    pub roles: Vec<String>,
}

/// Whom a stored API token acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenHolder {
    /// A user, by id.
    User(i64),
    /// A service account, by name.
    ServiceAccount(String),
}

/// A stored API token (its digest is the key it is found by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenState {
    pub id: String,
    pub holder: TokenHolder,
    /// The subset of the holder's permissions the token is limited to, if any.
    pub limit: Option<Vec<String>>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

/// Each part is shared: cloning `Subjects` is cheap, and changing one entry of a clone copies
/// only the part it is in (a revocation copies the small set of revoked ids, not the users).
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    users: Arc<HashMap<String, UserState>>,
    /// Lower-cased email -> user id.
    emails: Arc<HashMap<String, String>>,
    accounts: Arc<HashMap<String, AccountState>>,
    tokens: Arc<HashMap<[u8; 32], TokenState>>,
    deleted_users: Arc<HashSet<String>>,
    revoked_jtis: Arc<HashSet<String>>,
}

impl Subjects {
    /// Adds or replaces the user with this id.
    pub fn insert_user(&mut self, id: String, state: UserState) {
        let emails = Arc::make_mut(&mut self.emails);
        let users = Arc::make_mut(&mut self.users);
        if let Some(old) = users.get(&id) {
            emails.remove(&old.email.to_ascii_lowercase());
        }
        emails.insert(state.email.to_ascii_lowercase(), id.clone());
        users.insert(id, state);
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut UserState> {
        Arc::make_mut(&mut self.users).get_mut(id)
    }

    pub fn insert_account(&mut self, name: String, state: AccountState) {
        Arc::make_mut(&mut self.accounts).insert(name, state);
    }

    pub fn account_mut(&mut self, name: &str) -> Option<&mut AccountState> {
        Arc::make_mut(&mut self.accounts).get_mut(name)
    }

    /// Adds or replaces the API token with this digest.
    pub fn insert_token(&mut self, digest: [u8; 32], state: TokenState) {
        Arc::make_mut(&mut self.tokens).insert(digest, state);
    }

    /// Records that the user with this id was deleted; the id is never given to anyone else.
    pub fn mark_deleted(&mut self, id: String) {
        Arc::make_mut(&mut self.deleted_users).insert(id);
    }

    /// Whether this id (the JWT `sub`) belonged to a user who has been deleted.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.deleted_users.contains(id)
    }

    pub fn revoke_jti(&mut self, jti: String) {
        Arc::make_mut(&mut self.revoked_jtis).insert(jti);
    }

    /// The stored user with this id (the JWT `sub`).
    pub fn user(&self, id: &str) -> Option<&UserState> {
        self.users.get(id)
    }

    /// The stored user with this email (case-insensitive), for tokens from an identity provider
    /// whose `sub` the store does not know.
    pub fn user_by_email(&self, email: &str) -> Option<&UserState> {
        let id = self.emails.get(&email.to_ascii_lowercase())?;
        self.users.get(id)
    }

    pub fn account(&self, name: &str) -> Option<&AccountState> {
        self.accounts.get(name)
    }

    /// The stored API token with this digest.
    pub fn token(&self, digest: &[u8; 32]) -> Option<&TokenState> {
        self.tokens.get(digest)
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_jtis.contains(jti)
    }

    /// These subjects as a candidate policy would leave them: each stored user it names (by
    /// email) and each account it names takes the candidate's roles and disabled flag; with
    /// `prune`, stored users it does not name are deleted and accounts it does not name gone,
    /// as applying it would. Users it adds have no id yet, so no token names them.
    pub fn overlaid(
        &self,
        users: &[UserSpec],
        accounts: &[ServiceAccountSpec],
        prune: bool,
    ) -> Subjects {
        let mut next = self.clone();
        let named: HashMap<String, &UserSpec> = users
            .iter()
            .map(|u| (u.email.to_ascii_lowercase(), u))
            .collect();
        let stored: Vec<(String, String)> = self
            .emails
            .iter()
            .map(|(email, id)| (email.clone(), id.clone()))
            .collect();
        for (email, id) in stored {
            match named.get(&email) {
                Some(spec) => {
                    if let Some(user) = next.user_mut(&id) {
                        user.roles = spec.roles.clone();
                        user.disabled = spec.disabled;
                    }
                }
                None if prune => {
                    Arc::make_mut(&mut next.users).remove(&id);
                    Arc::make_mut(&mut next.emails).remove(&email);
                    next.mark_deleted(id);
                }
                None => {}
            }
        }
        if prune {
            next.accounts = Arc::default();
        }
        for account in accounts {
            let state = AccountState {
                disabled: account.disabled,
                roles: account.roles.clone(),
            };
            next.insert_account(account.name.clone(), state);
        }
        next
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

/// Subjects as they travel in the in-process filter's bundle: every part in a stable order,
/// API tokens by the hex of their SHA-256 digest (never the token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsWire {
    pub users: BTreeMap<String, UserState>,
    pub accounts: BTreeMap<String, AccountState>,
    pub tokens: BTreeMap<String, TokenState>,
    pub deleted_users: Vec<String>,
    pub revoked_jtis: Vec<String>,
}

/// A bundle's token key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an API token digest is not 64 hex digits")]
pub struct DigestError;

fn to_hex(digest: &[u8; 32]) -> String {
    crate::value::hex(digest)
}

fn from_hex(text: &str) -> Result<[u8; 32], DigestError> {
    crate::value::digest_from_hex(text).ok_or(DigestError)
}

impl Subjects {
    /// Everything, for the bundle.
    pub fn to_wire(&self) -> SubjectsWire {
        let mut deleted_users: Vec<String> = self.deleted_users.iter().cloned().collect();
        deleted_users.sort_unstable();
        let mut revoked_jtis: Vec<String> = self.revoked_jtis.iter().cloned().collect();
        revoked_jtis.sort_unstable();
        SubjectsWire {
            users: self
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            accounts: (self.accounts.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tokens: (self.tokens.iter())
                .map(|(k, v)| (to_hex(k), v.clone()))
                .collect(),
            deleted_users,
            revoked_jtis,
        }
    }

    /// The subjects a bundle carries; refused whole when any token digest is malformed.
    pub fn from_wire(wire: SubjectsWire) -> Result<Self, DigestError> {
        let mut out = Subjects::default();
        for (digest, token) in wire.tokens {
            out.insert_token(from_hex(&digest)?, token);
        }
        for (id, user) in wire.users {
            out.insert_user(id, user);
        }
        for (name, account) in wire.accounts {
            out.insert_account(name, account);
        }
        for id in wire.deleted_users {
            out.mark_deleted(id);
        }
        for jti in wire.revoked_jtis {
            out.revoke_jti(jti);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_accounts_tokens_and_revocations_are_found_by_key() {
        let mut s = Subjects::default();
        s.insert_user(
            "1".to_owned(),
            UserState {
                disabled: true,
                ..UserState::default()
            },
        );
        s.insert_account("bot".to_owned(), AccountState::default());
        s.insert_token(
            [7; 32],
            TokenState {
                id: "tok_1".to_owned(),
                holder: TokenHolder::ServiceAccount("bot".to_owned()),
                limit: None,
                expires_at: None,
                revoked: false,
            },
        );
        s.revoke_jti("j1".to_owned());
        s.mark_deleted("3".to_owned());
        assert!(s.user("1").is_some_and(|u| u.disabled));
        assert!(s.user("2").is_none());
        assert!(s.account("bot").is_some() && s.account("other").is_none());
        assert!(s.token(&[7; 32]).is_some_and(|t| t.id == "tok_1"));
        assert!(s.token(&[8; 32]).is_none());
        assert!(s.is_deleted("3") && !s.is_deleted("1"));
        assert!(s.is_revoked("j1") && !s.is_revoked("j2"));
        assert_eq!((s.user_count(), s.token_count()), (1, 1));
        // The bundle's form carries every part, and a bad digest refuses it whole.
        let wire = s.to_wire();
        assert_eq!(
            wire.tokens.keys().next().map(String::as_str),
            Some("07".repeat(32).as_str())
        );
        assert_eq!(
            Subjects::from_wire(wire.clone()).map(|b| b.to_wire()),
            Ok(wire.clone())
        );
        let mut bad = wire;
        let token = bad.tokens.pop_first().expect("one token").1;
        bad.tokens.insert("zz".repeat(32), token);
        assert_eq!(Subjects::from_wire(bad).err(), Some(DigestError));
    }

    #[test]
    fn a_clone_shares_every_part_until_one_changes() {
        let mut a = Subjects::default();
        a.insert_user(
            "1".to_owned(),
            UserState {
                email: "A@x.com".to_owned(),
                ..UserState::default()
            },
        );
        let mut b = a.clone();
        b.revoke_jti("j".to_owned());
        assert!(
            Arc::ptr_eq(&a.users, &b.users),
            "users not copied for a revocation"
        );
        assert!(!a.is_revoked("j") && b.is_revoked("j"));
        // Replacing a user moves its email in the index.
        b.insert_user(
            "1".to_owned(),
            UserState {
                email: "new@x.com".to_owned(),
                disabled: true,
                ..UserState::default()
            },
        );
        assert!(b.user_by_email("a@x.com").is_none());
        assert!(b.user_by_email("NEW@x.com").is_some_and(|u| u.disabled));
        assert!(a.user_by_email("a@x.com").is_some_and(|u| !u.disabled));
    }

    #[test]
    fn a_candidate_overlay_changes_named_subjects_and_prunes_the_rest() {
        let mut live = Subjects::default();
        for (id, email) in [("1", "a@x.com"), ("2", "b@x.com")] {
            let state = UserState {
                email: email.to_owned(),
                roles: vec!["viewer".to_owned()],
                ..UserState::default()
            };
            live.insert_user(id.to_owned(), state);
        }
        live.insert_account("bot".to_owned(), AccountState::default());
        let users = [UserSpec {
            email: "A@x.com".to_owned(),
            name: None,
            disabled: true,
            roles: vec!["admin".to_owned()],
        }];
        let kept = live.overlaid(&users, &[], false);
        assert!(kept
            .user("1")
            .is_some_and(|u| u.disabled && u.roles == ["admin"]));
        assert!(kept.user("2").is_some_and(|u| u.roles == ["viewer"]));
        assert!(kept.account("bot").is_some());
        let pruned = live.overlaid(&users, &[], true);
        assert!(pruned.user("1").is_some() && pruned.user("2").is_none());
        assert!(pruned.is_deleted("2") && pruned.user_by_email("b@x.com").is_none());
        assert!(pruned.account("bot").is_none());
        // The live subjects are untouched.
        assert!(live.user("1").is_some_and(|u| !u.disabled) && live.user("2").is_some());
    }
}
