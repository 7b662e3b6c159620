//! `portcullis check`: decides one request offline against the stored policy, through the
//! server's own `Authorizer`, and explains the decision. Exit 0 on allow, 1 on deny.

use std::sync::Arc;

use super::{exit, CheckArgs};
use crate::app;
use crate::authz::{AccessRequest, Authorizer, Decision, DenyCause};
use crate::config::Config;
use crate::identity::Principal;
use crate::manage;
use crate::policy::PolicySnapshot;

pub(super) async fn check_command(args: CheckArgs, config: &Config) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let decided = decide(&args, config, &store).await;
    store.close().await;
    let (decision, snapshot) = decided?;
    match decision {
        Decision::Allow(a) => {
            println!(
                "allow: permission {:?} grants {} (policy version {})",
                a.matched_permission, a.matched_activity, a.policy_version
            );
            println!("caller permissions: {}", a.permissions.join(","));
            Ok(exit::OK)
        }
        Decision::Deny(d) => {
            let status = d.reason.status().http_code();
            let detail = match &d.cause {
                DenyCause::NoActivity { held } => {
                    let names: Vec<&str> =
                        held.ids().map(|id| snapshot.permission_name(id)).collect();
                    format!("no activity granted by [{}] matches", names.join(","))
                }
                other => other.to_string(),
            };
            println!(
                "deny {status} {}: {detail} (for {} {})",
                d.reason.code(),
                args.method,
                args.path
            );
            Ok(exit::DENY)
        }
    }
}

/// The decision, and the snapshot it was made against (to name permissions in the answer).
async fn decide(
    args: &CheckArgs,
    config: &Config,
    store: &crate::store::SqlStore,
) -> anyhow::Result<(Decision, Arc<PolicySnapshot>)> {
    let snapshot = Arc::new(manage::load_snapshot(store).await?);
    let handle = Arc::new(arc_swap::ArcSwapOption::from(Some(snapshot.clone())));
    let identifier = app::identifier(config)?;
    let authorizer = Authorizer::new(handle, Arc::new(identifier))
        .with_permission_source(config.jwt.permissions_from)
        .with_subject_claim(config.jwt.subject_claim);
    let bearer = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let request = AccessRequest {
        method: &args.method,
        scheme: "https",
        host: &args.host,
        path: &args.path,
        headers: bearer
            .iter()
            .map(|b| ("authorization", b.as_str().into()))
            .collect(),
        not_utf8: None,
    };
    let decision = match &args.permissions {
        Some(held) => {
            let principal = Principal::Assumed {
                permissions: held.clone(),
            };
            authorizer.decide_as(&request, Arc::new(principal))
        }
        None => authorizer.decide(&request).await,
    };
    Ok((decision, snapshot))
}
