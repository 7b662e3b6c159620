//! `portcullis session list [--user EMAIL]` and `session revoke ID|--user EMAIL`: the login
//! sessions in the store. Revoking one reaches every sidecar within the reload bound (its id
//! is refused as a `sid`).

use super::{exit, unix_now, SessionCommand};
use crate::app;
use crate::config::Config;
use crate::store::{LoginStore as _, StoreError};

pub(super) async fn session_command(cmd: SessionCommand, config: &Config) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let result = run(cmd, &store).await;
    store.close().await;
    result
}

async fn run(cmd: SessionCommand, store: &crate::store::SqlStore) -> anyhow::Result<u8> {
    let now = unix_now()?;
    match cmd {
        SessionCommand::List { user } => {
            let sessions = store.list_sessions(user.as_deref()).await?;
            println!(
                "{:<44} {:<28} {:>11} {:>11} state",
                "id", "user", "created", "expires"
            );
            for s in sessions {
                let state = match (&s.revoked_at, &s.revoked_reason) {
                    (Some(_), Some(r)) => format!("revoked ({r})"),
                    (Some(_), None) => "revoked".to_owned(),
                    (None, _) if s.expires_at <= now => "expired".to_owned(),
                    (None, _) => "live".to_owned(),
                };
                println!(
                    "{:<44} {:<28} {:>11} {:>11} {state}",
                    s.id, s.email, s.created_at, s.expires_at
                );
            }
            Ok(exit::OK)
        }
        SessionCommand::Revoke {
            id: Some(id),
            user: None,
        } => {
            if store
                .revoke_session(&id, "revoked by an operator", now)
                .await?
            {
                println!("revoked session {id}");
                Ok(exit::OK)
            } else {
                eprintln!("error: no session {id:?}");
                Ok(exit::NOT_FOUND)
            }
        }
        SessionCommand::Revoke {
            user: Some(email), ..
        } => match store.revoke_user_sessions(&email, now).await {
            Ok(n) => {
                println!("revoked {n} session(s) of {email}");
                Ok(exit::OK)
            }
            Err(e @ StoreError::UnknownUser { .. }) => {
                eprintln!("error: {e}");
                Ok(exit::NOT_FOUND)
            }
            Err(e) => Err(e.into()),
        },
        SessionCommand::Revoke {
            id: None,
            user: None,
        } => {
            eprintln!("error: name a session id or --user");
            Ok(exit::USAGE)
        }
    }
}
