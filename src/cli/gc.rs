//! `portcullis gc`: one housekeeping round by hand (or from a CronJob), the same code every
//! sidecar runs on its `database.gc_interval`. Prints what it removed per table; a round another
//! portcullis is running (it holds the PostgreSQL lock) is reported and is not an error.

use anyhow::Context as _;

use super::exit;
use crate::app;
use crate::config::Config;
use crate::store::GcOutcome;

pub(super) async fn gc_command(config: &Config) -> anyhow::Result<u8> {
    let now = super::unix_now()?;
    let store = app::open_store(config).await?;
    let outcome = store.collect_garbage(now).await;
    store.close().await;
    match outcome.context("housekeeping failed")? {
        GcOutcome::Done(removed) => {
            for (table, rows) in removed.iter() {
                println!("{:<16} {rows:>8} removed", table.name());
            }
        }
        GcOutcome::Skipped => {
            println!("skipped: another portcullis is running housekeeping now (it holds the lock)")
        }
    }
    Ok(exit::OK)
}
