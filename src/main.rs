//! Entry point: parse the command line, load and validate the configuration, start tracing
//! and the runtime, and turn the outcome into an exit code.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use portcullis::app::LogDrops;
use portcullis::cli::{self, exit, Cli};
use portcullis::config::{Config, LogFormat};

/// mimalloc instead of the system allocator: a Check allocates and frees many small strings
/// on whichever worker runs it, where glibc's malloc spent a tenth of the server's CPU under
/// load and kept per-thread arenas of freed memory (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG_FILE: &str = "portcullis.yaml";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    let config = match Config::load(path.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", portcullis::error_chain(&e));
            return ExitCode::from(exit::CONFIG);
        }
    };
    // Held to the end: dropping it flushes the lines still buffered.
    let (_flush_on_exit, log_drops) = match init_tracing(&config) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("error: log.level: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(cli::run(cli, config, log_drops)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if is_config_error(&e) {
                exit::CONFIG
            } else {
                exit::FAILURE
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Bad key material (Check's or the login section's keys and secrets) is a configuration
/// error, like a bad config file.
fn is_config_error(e: &anyhow::Error) -> bool {
    use portcullis::{
        identity::KeyError,
        keyring::{KeyringError, LoginKeyringError},
    };
    e.chain()
        .any(|c| c.is::<KeyError>() || c.is::<KeyringError>() || c.is::<LoginKeyringError>())
}

/// Lines the log writer holds while stderr is slow; beyond this, lines are dropped and
/// counted rather than blocking the thread that logs (a Check, possibly).
const LOG_BUFFER_LINES: usize = 16_384;

/// Logs go to stderr through a non-blocking, bounded, lossy writer: a full pipe or a slow log
/// collector never stalls a request. Returns the guard that flushes on exit and the counter of
/// dropped lines.
fn init_tracing(
    config: &Config,
) -> Result<(tracing_appender::non_blocking::WorkerGuard, LogDrops), String> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(config.log.filter()).map_err(|e| e.to_string())?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .finish(std::io::stderr());
    let drops = LogDrops::new(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok((guard, drops))
}
