//! The decision as tables, with no database: `subjects` (JWT callers against the snapshot's
//! users: revocations, store mode, outside providers), `callers` (API tokens, assumed and
//! anonymous callers, hosts, role names), `reasons` (causes, reasons, ids, tokens resolved
//! from the snapshot). This file holds the shared policy, snapshot and helpers.

mod callers;
mod reasons;
mod subjects;

use super::*;
use crate::identity::{TokenCaller, TokenError, TokenSubject};
use crate::policy::{PolicyDocument, Subjects, UserState};

const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\n  write:\n    \
                      activities: [POST /r]\n  public:\n    activities: [GET /open]\n\
                      roles:\n  viewer: [read]\n  admin: [read, write]\n";

/// Users: 1 viewer, 2 disabled, 3 whose tokens up to t=1000 are revoked; 9 was deleted;
/// jti "gone" is revoked.
fn snapshot() -> PolicySnapshot {
    let doc = PolicyDocument::from_yaml("test", POLICY).expect("policy");
    let mut subjects = Subjects::default();
    let user = |id: &str, roles: &[&str], disabled, after| UserState {
        email: format!("u{id}@x.com"),
        name: None,
        disabled,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tokens_valid_after: after,
    };
    subjects.insert_user("1".to_owned(), user("1", &["viewer"], false, None));
    subjects.insert_user("2".to_owned(), user("2", &["admin"], true, None));
    subjects.insert_user("3".to_owned(), user("3", &["admin"], false, Some(1000)));
    subjects.mark_deleted("9".to_owned());
    subjects.revoke_jti("gone".to_owned());
    PolicySnapshot::compile(&doc, 1)
        .expect("compiles")
        .with_subjects(subjects)
}

fn jwt(sub: &str, roles: &[&str], iat: Option<i64>, jti: Option<&str>) -> Arc<Principal> {
    Arc::new(Principal::Jwt(JwtCaller {
        subject: sub.to_owned(),
        email: None,
        email_verified: false,
        name: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        permissions: Vec::new(),
        expires_at: UnixTime::from_secs(i64::MAX / 2),
        issued_at: iat.map(UnixTime::from_secs),
        jti: jti.map(str::to_owned),
        sid: None,
    }))
}

fn decide(
    method: &str,
    path: &str,
    principal: Option<Arc<Principal>>,
    source: PermissionSource,
) -> Decision {
    decide_with(&snapshot(), method, "", path, principal, source)
}

/// `Ok(roles shown upstream)` on allow, `Err(reason)` on deny.
fn outcome(d: &Decision) -> Result<Vec<String>, Reason> {
    match d {
        Decision::Allow(a) => Ok(a.roles.clone()),
        Decision::Deny(d) => Err(d.reason),
    }
}

/// (name, caller, how JWT callers meet the store, method, expected outcome)
type Case<R = PermissionSource> = (
    &'static str,
    Arc<Principal>,
    R,
    &'static str,
    Result<(), Reason>,
);
