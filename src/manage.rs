//! Policy administration, shared by the CLI and the server: the rules around the store.
//! Applying a policy file (merge, validate, compile, diff, all inside the store's write lock),
//! building a snapshot from what is stored, and issuing API tokens whose limit never exceeds
//! what their owner holds. The store only reads and writes rows.

mod shadow;

pub use shadow::{apply_shadow, candidate_subjects, compile_candidate, discard, promote};

use crate::identity::api_token;
use crate::policy::document::{AUTHENTICATED, PUBLIC};
use crate::policy::{PolicyDocument, PolicyError, PolicySnapshot};
use crate::store::{
    NewToken, OwnerRef, PolicyStore, StoreError, StoredState, REVOCATION_GRACE_SECS,
};

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(transparent)]
    Store(StoreError),
    /// The policy (a file, or what is stored) is invalid or does not compile.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the owner does not hold permission {permission:?}")]
    LimitBeyondOwner { permission: String },
    #[error("no permission {permission:?} exists in the stored policy")]
    UnknownPermission { permission: String },
    #[error("{owner} is disabled: a token for it could never be used")]
    OwnerDisabled { owner: String },
    #[error("no candidate policy is stored (apply one with `policy apply FILE --shadow`)")]
    NoCandidate,
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            // A plan's refusal is the policy's problem, not the store's.
            StoreError::Plan(p) => ManageError::Policy(p),
            other => ManageError::Store(other),
        }
    }
}

/// What `apply` did (or, on a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub changes: Vec<String>,
    pub version: i64,
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

/// Applies a policy file: with `prune` the store becomes exactly the file, otherwise the
/// file's entries replace those of the same name. Nothing is written when the result would
/// not compile, when nothing changes, or on a dry run.
pub async fn apply(
    store: &dyn PolicyStore,
    file: &PolicyDocument,
    prune: bool,
    dry_run: bool,
) -> Result<ApplyOutcome, ManageError> {
    let mut changes = Vec::new();
    let found = &mut changes;
    let version = store
        .update_policy(Box::new(move |current, version| {
            let merged = checked(current, file, prune, version, "the policy after this apply")?;
            *found = current.diff(&merged);
            Ok((!found.is_empty() && !dry_run).then_some(merged))
        }))
        .await?;
    Ok(ApplyOutcome { changes, version })
}

/// `current` merged with `file`, validated and compiled as the next version would be.
fn checked(
    current: &PolicyDocument,
    file: &PolicyDocument,
    prune: bool,
    version: i64,
    what: &str,
) -> Result<PolicyDocument, PolicyError> {
    let merged = current.merged_with(file, prune);
    merged.validate_as(what)?;
    PolicySnapshot::compile(&merged, version + 1)?;
    Ok(merged)
}

/// What `jwt revoke JTI` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JtiRevocation {
    /// Stored: every sidecar refuses the token from its next reload.
    Stored,
    /// Nothing stored: the token expired more than [`REVOCATION_GRACE_SECS`] before `now`,
    /// so no sidecar accepts it any more, and a revocation would only be dropped again.
    AlreadyExpired,
}

/// Revokes one JWT by its `jti`, unless its expiry (`expires_at`, the token's `exp`) is so far
/// past that no sidecar could accept it: then nothing is written (no version bump either).
pub async fn revoke_jti(
    store: &dyn PolicyStore,
    jti: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<JtiRevocation, ManageError> {
    if expires_at.is_some_and(|exp| exp < now - REVOCATION_GRACE_SECS) {
        return Ok(JtiRevocation::AlreadyExpired);
    }
    store.revoke_jti(jti, expires_at).await?;
    Ok(JtiRevocation::Stored)
}

/// Loads what is stored and compiles it into a snapshot.
pub async fn load_snapshot(store: &dyn PolicyStore) -> Result<PolicySnapshot, ManageError> {
    Ok(compile(store.load_state().await?)?)
}

/// Compiles a stored state into a snapshot (CPU-heavy: regexes; keep it off async workers).
pub fn compile(state: StoredState) -> Result<PolicySnapshot, PolicyError> {
    Ok(PolicySnapshot::compile(&state.document, state.version)?.with_subjects(state.subjects))
}

/// Issues an API token. A limit must be a subset of what the owner holds now; the token is
/// returned once and only its digest is stored.
pub async fn issue_token(
    store: &dyn PolicyStore,
    owner: OwnerRef<'_>,
    label: &str,
    now: i64,
    expires_at: Option<i64>,
    permissions: Option<&[String]>,
) -> Result<IssuedToken, ManageError> {
    let (doc, version) = store.load_policy().await?;
    let (roles, disabled): (&[String], bool) = match owner {
        OwnerRef::User(email) => {
            let email = email.to_ascii_lowercase();
            match doc.users.iter().find(|u| u.email == email) {
                Some(u) => (&u.roles, u.disabled),
                None => return Err(StoreError::UnknownUser { email }.into()),
            }
        }
        OwnerRef::ServiceAccount(name) => {
            match doc.service_accounts.iter().find(|s| s.name == name) {
                Some(s) => (&s.roles, s.disabled),
                None => {
                    let name = name.to_owned();
                    return Err(StoreError::UnknownServiceAccount { name }.into());
                }
            }
        }
    };
    if disabled {
        let owner = match owner {
            OwnerRef::User(email) => format!("user {email}"),
            OwnerRef::ServiceAccount(name) => format!("service account {name}"),
        };
        return Err(ManageError::OwnerDisabled { owner });
    }
    if let Some(limit) = permissions {
        if let Some(p) = limit.iter().find(|p| {
            p.as_str() != PUBLIC && p.as_str() != AUTHENTICATED && !doc.permissions.contains_key(*p)
        }) {
            return Err(ManageError::UnknownPermission {
                permission: p.clone(),
            });
        }
        let snapshot = PolicySnapshot::compile(&doc, version)?;
        let held = snapshot.grants(true, [], roles.iter().map(String::as_str));
        let held: Vec<&str> = held.ids().map(|id| snapshot.permission_name(id)).collect();
        if let Some(p) = limit
            .iter()
            .find(|p| *p != PUBLIC && *p != AUTHENTICATED && !held.contains(&p.as_str()))
        {
            return Err(ManageError::LimitBeyondOwner {
                permission: p.clone(),
            });
        }
    }
    let token = api_token::generate();
    let id = api_token::generate_id();
    store
        .insert_token(NewToken {
            id: &id,
            digest: crate::identity::digest(&token),
            owner,
            label,
            permissions,
            created_at: now,
            expires_at,
        })
        .await?;
    Ok(IssuedToken { id, token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\n  write:\n    \
                          activities: [POST /r]\nroles:\n  viewer: [read]\n  admin: [read, write]\n\
                          users:\n  - {email: v@x.com, roles: [viewer]}\n\
                          service_accounts:\n  - {name: bot, roles: [viewer]}\n";

    fn doc(yaml: &str) -> PolicyDocument {
        PolicyDocument::from_yaml("test", yaml).unwrap()
    }

    /// A revocation of a token expired past every leeway writes nothing (and says so); one
    /// within the leeway, or without an expiry, is stored and bumps the version.
    #[tokio::test]
    async fn revoking_a_long_expired_jti_stores_nothing() {
        let store = MemoryStore::new();
        let now = 1_800_000_000;
        let v0 = store.policy_version().await.unwrap();
        let long_ago = now - REVOCATION_GRACE_SECS - 1;
        assert_eq!(
            revoke_jti(&store, "old", Some(long_ago), now)
                .await
                .unwrap(),
            JtiRevocation::AlreadyExpired
        );
        assert_eq!(store.policy_version().await.unwrap(), v0, "nothing written");
        let within_leeway = now - REVOCATION_GRACE_SECS + 1;
        for (jti, exp) in [("recent", Some(within_leeway)), ("forever", None)] {
            assert_eq!(
                revoke_jti(&store, jti, exp, now).await.unwrap(),
                JtiRevocation::Stored
            );
        }
        assert_eq!(store.policy_version().await.unwrap(), v0 + 2);
    }

    #[tokio::test]
    async fn apply_writes_once_and_then_reports_no_changes() {
        let store = MemoryStore::new();
        let first = apply(&store, &doc(POLICY), false, false).await.unwrap();
        assert!(
            first.changes.contains(&"+ role admin".to_owned()),
            "{first:?}"
        );
        assert_eq!(first.version, 1);
        let again = apply(&store, &doc(POLICY), false, false).await.unwrap();
        assert!(again.changes.is_empty());
        assert_eq!(again.version, 1, "no change, no bump");
    }

    #[tokio::test]
    async fn dry_run_and_invalid_results_write_nothing() {
        let store = MemoryStore::new();
        let dry = apply(&store, &doc(POLICY), false, true).await.unwrap();
        assert!(!dry.changes.is_empty());
        assert_eq!(store.policy_version().await.unwrap(), 0);
        apply(&store, &doc(POLICY), false, false).await.unwrap();
        // A partial file naming a role that does not exist: refused, nothing written.
        let bad = doc("users:\n  - {email: n@x.com, roles: [ghost]}\n");
        let err = apply(&store, &bad, false, false).await.unwrap_err();
        assert!(matches!(err, ManageError::Policy(_)), "{err:?}");
        assert!(
            crate::error_chain(&err).contains("unknown role \"ghost\""),
            "{err:?}"
        );
        assert_eq!(store.policy_version().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn token_limits_never_exceed_the_owner() {
        let store = MemoryStore::new();
        apply(&store, &doc(POLICY), false, false).await.unwrap();
        let write = vec!["write".to_owned()];
        let read = vec!["read".to_owned(), PUBLIC.to_owned()];
        for owner in [OwnerRef::User("v@x.com"), OwnerRef::ServiceAccount("bot")] {
            let err = issue_token(&store, owner, "", 0, None, Some(&write))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ManageError::LimitBeyondOwner { permission } if permission == "write"),
                "{err:?}"
            );
            issue_token(&store, owner, "", 0, None, Some(&read))
                .await
                .unwrap();
        }
        let err = issue_token(&store, OwnerRef::User("who@x.com"), "", 0, None, None)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ManageError::Store(StoreError::UnknownUser { .. })
        ));
        // A permission no one has is named as such, not as one the owner lacks.
        let ghost = vec!["ghost".to_owned()];
        let err = issue_token(&store, OwnerRef::User("v@x.com"), "", 0, None, Some(&ghost))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManageError::UnknownPermission { permission } if permission == "ghost"),
            "{err:?}"
        );
        // A disabled owner gets no token: it could never be used.
        let disabled =
            doc("service_accounts:\n  - {name: old-bot, disabled: true, roles: [viewer]}\n");
        apply(&store, &disabled, false, false).await.unwrap();
        let err = issue_token(
            &store,
            OwnerRef::ServiceAccount("old-bot"),
            "",
            0,
            None,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ManageError::OwnerDisabled { .. }), "{err:?}");
        assert_eq!(store.list_tokens(None).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn snapshots_carry_subjects_and_tombstones() {
        let store = MemoryStore::new();
        apply(&store, &doc(POLICY), false, false).await.unwrap();
        let id = store.find_user("v@x.com").await.unwrap().unwrap().id;
        let pruned = "permissions:\n  read:\n    activities: [GET /r]\nroles:\n  viewer: [read]\n";
        apply(&store, &doc(pruned), true, false).await.unwrap();
        apply(&store, &doc(POLICY), false, false).await.unwrap();
        let again = store.find_user("v@x.com").await.unwrap().unwrap().id;
        assert_ne!(id, again, "a re-created user gets a new id");
        let snapshot = load_snapshot(&store).await.unwrap();
        assert!(snapshot.subjects().is_deleted(&id.to_string()));
        assert!(snapshot.subjects().user(&again.to_string()).is_some());
    }
}
