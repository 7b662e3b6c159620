//! `token issue|list|revoke` (API tokens), `jwt mint` and `jwt revoke`: credentials for
//! operators, demos and tests, issued through `crate::manage`.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use super::{exit, unix_now, TokenCommand};
use crate::app;
use crate::config::Config;
use crate::manage::{self, JtiRevocation, ManageError};
use crate::policy::document::{AUTHENTICATED, PUBLIC};
use crate::store::{OwnerRef, PolicyStore, SqlStore, StoreError, REVOCATION_GRACE_SECS};

fn format_time(unix: Option<i64>) -> String {
    unix.filter(|t| *t >= 0)
        .and_then(super::rfc3339)
        .unwrap_or_else(|| "-".to_owned())
}

/// Refusals the operator can fix, printed as one line: the exit code of a change refused for
/// what it names, 66 when that does not exist, 70 when it exists but the change cannot be
/// made; `None` for any other error.
fn refusal(e: &ManageError) -> Option<u8> {
    match e {
        ManageError::UnknownPermission { .. }
        | ManageError::Store(
            StoreError::UnknownUser { .. }
            | StoreError::UnknownServiceAccount { .. }
            | StoreError::UnknownToken { .. },
        ) => Some(exit::NOT_FOUND),
        ManageError::LimitBeyondOwner { .. } | ManageError::OwnerDisabled { .. } => {
            Some(exit::FAILURE)
        }
        _ => None,
    }
}

fn report(result: Result<String, ManageError>) -> anyhow::Result<u8> {
    match result {
        Ok(message) => {
            println!("{message}");
            Ok(exit::OK)
        }
        Err(e) => match refusal(&e) {
            Some(code) => {
                eprintln!("error: {e}");
                Ok(code)
            }
            None => Err(e.into()),
        },
    }
}

pub(super) async fn token_command(cmd: TokenCommand, config: &Config) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let result = token(&store, cmd).await;
    store.close().await;
    result
}

async fn token(store: &SqlStore, cmd: TokenCommand) -> anyhow::Result<u8> {
    match cmd {
        TokenCommand::Issue {
            user,
            service_account,
            label,
            expires_in,
            permissions,
        } => {
            let owner = match (&user, &service_account) {
                (Some(email), _) => OwnerRef::User(email),
                (None, Some(name)) => OwnerRef::ServiceAccount(name),
                (None, None) => bail!("name an owner: --user EMAIL or --service-account NAME"),
            };
            let now = unix_now()?;
            let expires_at = match expires_in {
                Some(d) => Some(now.saturating_add(i64::try_from(d.as_secs())?)),
                None => None,
            };
            let issued = manage::issue_token(
                store,
                owner,
                &label,
                now,
                expires_at,
                permissions.as_deref(),
            )
            .await;
            match issued {
                Ok(issued) => {
                    eprintln!(
                        "issued {} (expires {}); the token is shown only now:",
                        issued.id,
                        format_time(expires_at)
                    );
                    println!("{}", issued.token);
                    Ok(exit::OK)
                }
                Err(e) => report(Err(e)),
            }
        }
        TokenCommand::List { owner } => {
            if let Some(owner) = owner.as_deref() {
                // An owner no one has is a mistake to say, not an empty table.
                let (doc, _) = store.load_policy().await?;
                let known = doc
                    .users
                    .iter()
                    .any(|u| u.email.eq_ignore_ascii_case(owner))
                    || doc.service_accounts.iter().any(|s| s.name == owner);
                if !known {
                    eprintln!("error: no user or service account {owner:?}");
                    return Ok(exit::NOT_FOUND);
                }
            }
            println!(
                "{:<21} {:<32} {:<16} {:<20} {:<20} {:<20} {:<20} permissions",
                "id", "owner", "label", "created", "expires", "revoked", "last used"
            );
            for t in store.list_tokens(owner.as_deref()).await? {
                println!(
                    "{:<21} {:<32} {:<16} {:<20} {:<20} {:<20} {:<20} {}",
                    t.id,
                    t.owner,
                    t.label,
                    format_time(Some(t.created_at)),
                    format_time(t.expires_at),
                    format_time(t.revoked_at),
                    format_time(t.last_used_at),
                    t.permissions
                        .map(|p| p.join(","))
                        .unwrap_or_else(|| "(all of the owner's)".to_owned())
                );
            }
            Ok(exit::OK)
        }
        TokenCommand::Revoke { id } => report(
            store
                .revoke_token(&id)
                .await
                .map(|()| format!("revoked {id}"))
                .map_err(ManageError::from),
        ),
    }
}

/// `jwt revoke JTI` or `jwt revoke --user EMAIL`.
pub(super) async fn revoke_jwt_command(
    jti: Option<String>,
    user: Option<String>,
    expires_at: Option<i64>,
    config: &Config,
) -> anyhow::Result<u8> {
    let now = unix_now()?;
    let store = app::open_store(config).await?;
    let result = match (&jti, &user) {
        (_, Some(email)) => store
            .revoke_user_tokens(email, now)
            .await
            .map(|()| format!("revoked every token of {email} issued until now"))
            .map_err(ManageError::from),
        (Some(jti), None) => manage::revoke_jti(&store, jti, expires_at, now)
            .await
            .map(|done| jti_revoked(jti, done, expires_at)),
        (None, None) => {
            store.close().await;
            bail!("name a jti or --user");
        }
    };
    store.close().await;
    report(result)
}

/// What `jwt revoke JTI` says it did.
fn jti_revoked(jti: &str, done: JtiRevocation, expires_at: Option<i64>) -> String {
    match done {
        JtiRevocation::Stored => format!("revoked jti {jti}"),
        JtiRevocation::AlreadyExpired => format!(
            "not stored: jti {jti} expired at {}, more than {} min ago (the longest leeway); \
             no sidecar accepts its token any more, so there is nothing to revoke",
            expiry(expires_at.unwrap_or_default()),
            REVOCATION_GRACE_SECS / 60
        ),
    }
}

/// Unix seconds as RFC 3339 (the seconds themselves when out of range).
fn expiry(secs: i64) -> String {
    super::rfc3339(secs).unwrap_or_else(|| secs.to_string())
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    roles: &'a [String],
    permissions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a [String]>,
    iat: i64,
    exp: i64,
    jti: String,
}

pub(super) async fn mint_command(
    email: &str,
    ttl: Duration,
    config: &Config,
) -> anyhow::Result<u8> {
    let identifier = app::identifier(config)?;
    if config.jwt.signing_key.is_none() {
        eprintln!("error: jwt.signing_key is not configured: name the kid to sign with");
        return Ok(exit::CONFIG);
    }
    let store = app::open_store(config).await?;
    let found = async {
        let user = store.find_user(email).await?;
        let snapshot = manage::load_snapshot(&store).await?;
        anyhow::Ok((user, snapshot))
    }
    .await;
    store.close().await;
    let (user, snapshot) = found?;
    let Some(user) = user else {
        eprintln!("error: no user {email:?} in the store");
        return Ok(exit::NOT_FOUND);
    };
    if user.disabled {
        bail!("user {email:?} is disabled");
    }
    let grants = snapshot.grants(true, [], user.roles.iter().map(String::as_str));
    let mut permissions: Vec<String> = grants
        .ids()
        .map(|id| snapshot.permission_name(id).to_owned())
        .filter(|n| n != PUBLIC && n != AUTHENTICATED)
        .collect();
    permissions.sort_unstable();
    let now = unix_now()?;
    let claims = MintClaims {
        sub: user.id.to_string(),
        email: Some(&user.email),
        name: user.name.as_deref(),
        roles: &user.roles,
        permissions,
        iss: config.jwt.issuer.as_deref(),
        aud: (!config.jwt.audience.is_empty()).then_some(config.jwt.audience.as_slice()),
        iat: now,
        exp: now.saturating_add(i64::try_from(ttl.as_secs())?),
        jti: format!("{:032x}", rand::random::<u128>()),
    };
    println!("{}", identifier.keys().mint(&claims)?);
    Ok(exit::OK)
}
