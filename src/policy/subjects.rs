//! Who exists right now: users by id (disabled or not, current roles, JWTs revoked up to a
//! time), the ids of deleted users (never reused) and revoked JWT ids. Carried in the snapshot, so checking a JWT against the store's
//! current state never asks the store on the request path.

use std::collections::{HashMap, HashSet};

/// A stored user as the request path needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub disabled: bool,
    pub roles: Vec<String>,
    /// JWTs of this user issued at or before this time (unix seconds) are revoked.
    pub tokens_valid_after: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Subjects {
    users: HashMap<String, UserState>,
    deleted_users: HashSet<String>,
    revoked_jtis: HashSet<String>,
}

impl Subjects {
    pub fn insert_user(&mut self, id: String, state: UserState) {
        self.users.insert(id, state);
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut UserState> {
        self.users.get_mut(id)
    }

    /// Records that the user with this id was deleted; the id is never given to anyone else.
    pub fn mark_deleted(&mut self, id: String) {
        self.deleted_users.insert(id);
    }

    /// Whether this id (the JWT `sub`) belonged to a user who has been deleted.
    pub fn is_deleted(&self, id: &str) -> bool {
        self.deleted_users.contains(id)
    }

    pub fn revoke_jti(&mut self, jti: String) {
        self.revoked_jtis.insert(jti);
    }

    /// The stored user with this id (the JWT `sub`).
    pub fn user(&self, id: &str) -> Option<&UserState> {
        self.users.get(id)
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_jtis.contains(jti)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_revocations_are_found_by_id() {
        let mut s = Subjects::default();
        s.insert_user(
            "1".to_owned(),
            UserState {
                disabled: true,
                ..UserState::default()
            },
        );
        s.revoke_jti("j1".to_owned());
        s.mark_deleted("3".to_owned());
        assert!(s.user("1").is_some_and(|u| u.disabled));
        assert!(s.is_deleted("3") && !s.is_deleted("1"));
        assert!(s.user("2").is_none());
        assert!(s.is_revoked("j1") && !s.is_revoked("j2"));
        assert_eq!(s.user_count(), 1);
    }
}
