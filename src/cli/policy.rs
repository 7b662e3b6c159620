//! `policy apply|promote|discard|diff|export|lint` and `service-account create|list|disable`: policy as code, through
//! the same `manage::apply` the server's store is written with.

use std::path::Path;

use super::exit;
use crate::app;
use crate::config::Config;
use crate::error_chain;
use crate::manage::{self, ManageError};
use crate::policy::document::ServiceAccountSpec;
use crate::policy::PolicyDocument;
use crate::store::{PolicyStore, SqlStore};

use super::{PolicyCommand, ServiceAccountCommand};

/// Reads and parses a policy file; errors and lint warnings go to stderr, `Err` is the exit code.
pub(super) fn read_policy(file: &Path) -> Result<PolicyDocument, u8> {
    let origin = file.display().to_string();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {origin}: {e}");
            return Err(exit::DATA);
        }
    };
    match PolicyDocument::from_yaml(&origin, &text) {
        Ok(doc) => {
            for warning in crate::policy::validate::lint(&doc) {
                eprintln!("warning: {origin}: {warning}");
            }
            Ok(doc)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            Err(exit::DATA)
        }
    }
}

pub(super) async fn policy_command(cmd: PolicyCommand, config: &Config) -> anyhow::Result<u8> {
    match cmd {
        PolicyCommand::Lint { file } => match read_policy(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(exit::OK)
            }
            Err(code) => Ok(code),
        },
        PolicyCommand::Apply {
            file,
            prune,
            dry_run,
            shadow,
        } => {
            let doc = match read_policy(&file) {
                Ok(doc) => doc,
                Err(code) => return Ok(code),
            };
            let store = app::open_store(config).await?;
            let result = if shadow {
                manage::apply_shadow(&store, &doc, prune, dry_run).await
            } else {
                manage::apply(&store, &doc, prune, dry_run).await
            };
            store.close().await;
            let outcome = match result {
                Ok(o) => o,
                Err(ManageError::Policy(e)) => {
                    eprintln!("error: {}: {}", file.display(), error_chain(&e));
                    return Ok(exit::DATA);
                }
                Err(e) => return Err(e.into()),
            };
            for line in &outcome.changes {
                println!("{line}");
            }
            let n = outcome.changes.len();
            if shadow {
                let stored = if dry_run { "would store" } else { "stored" };
                println!(
                    "{stored} the candidate policy ({n} change(s) from the live one); evaluated beside it, not enforced (policy version {})",
                    outcome.version
                );
            } else if n == 0 {
                println!("no changes (policy version {})", outcome.version);
            } else if dry_run {
                println!("would apply {n} change(s); nothing written (dry run)");
            } else {
                println!("applied {n} change(s); policy version {}", outcome.version);
            }
            Ok(exit::OK)
        }
        PolicyCommand::Promote => {
            let store = app::open_store(config).await?;
            let result = manage::promote(&store).await;
            store.close().await;
            match result {
                Ok(outcome) => {
                    for line in &outcome.changes {
                        println!("{line}");
                    }
                    let n = outcome.changes.len();
                    println!(
                        "promoted the candidate policy: {n} change(s); policy version {}",
                        outcome.version
                    );
                    Ok(exit::OK)
                }
                Err(e) => candidate_error(e),
            }
        }
        PolicyCommand::Discard => {
            let store = app::open_store(config).await?;
            let result = manage::discard(&store).await;
            store.close().await;
            match result {
                Ok(version) => {
                    println!("discarded the candidate policy; policy version {version}");
                    Ok(exit::OK)
                }
                Err(e) => candidate_error(e),
            }
        }
        PolicyCommand::Diff { old, new } => {
            let (mut old, mut new) = match (read_policy(&old), read_policy(&new)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(code), _) | (_, Err(code)) => return Ok(code),
            };
            old.normalize();
            new.normalize();
            let lines = old.diff(&new);
            for line in &lines {
                println!("{line}");
            }
            Ok(if lines.is_empty() {
                exit::OK
            } else {
                exit::CHANGED
            })
        }
        PolicyCommand::Export => {
            let store = app::open_store(config).await?;
            let loaded = store.load_policy().await;
            store.close().await;
            print!("{}", loaded?.0.to_yaml()?);
            Ok(exit::OK)
        }
    }
}

/// Promote or discard without a candidate: nothing to act on (exit 66); a candidate that no
/// longer applies over the live policy is a bad policy (65); the rest is a failure.
fn candidate_error(e: ManageError) -> anyhow::Result<u8> {
    match e {
        ManageError::NoCandidate => {
            eprintln!("error: {e}");
            Ok(exit::NOT_FOUND)
        }
        ManageError::Policy(e) => {
            eprintln!("error: the candidate policy: {}", error_chain(&e));
            Ok(exit::DATA)
        }
        e => Err(e.into()),
    }
}

pub(super) async fn service_account_command(
    cmd: ServiceAccountCommand,
    config: &Config,
) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let result = service_account(&store, cmd).await;
    store.close().await;
    result
}

async fn service_account(store: &SqlStore, cmd: ServiceAccountCommand) -> anyhow::Result<u8> {
    let (current, _) = store.load_policy().await?;
    let existing = |name: &str| {
        current
            .service_accounts
            .iter()
            .find(|s| s.name == name)
            .cloned()
    };
    let spec = match cmd {
        ServiceAccountCommand::List => {
            for sa in &current.service_accounts {
                let disabled = if sa.disabled { " (disabled)" } else { "" };
                println!("{}{disabled} roles: {}", sa.name, sa.roles.join(","));
            }
            return Ok(exit::OK);
        }
        ServiceAccountCommand::Create {
            name,
            roles,
            description,
        } => {
            if existing(&name).is_some() {
                eprintln!("error: service account {name:?} already exists");
                return Ok(exit::FAILURE);
            }
            ServiceAccountSpec {
                name,
                description,
                disabled: false,
                roles,
            }
        }
        ServiceAccountCommand::Disable { name } => match existing(&name) {
            Some(sa) => ServiceAccountSpec {
                disabled: true,
                ..sa
            },
            None => {
                eprintln!("error: no service account {name:?}");
                return Ok(exit::NOT_FOUND);
            }
        },
    };
    let doc = PolicyDocument {
        service_accounts: vec![spec],
        ..PolicyDocument::default()
    };
    match manage::apply(store, &doc, false, false).await {
        Ok(outcome) => {
            for line in &outcome.changes {
                println!("{line}");
            }
            Ok(exit::OK)
        }
        Err(ManageError::Policy(e)) => {
            eprintln!("error: {}", error_chain(&e));
            Ok(exit::DATA)
        }
        Err(e) => Err(e.into()),
    }
}
