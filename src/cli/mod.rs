//! Command-line interface: clap definitions and dispatch; the handlers live by topic in
//! `policy`, `tokens`, `check` and `status`. Handlers get a loaded `Config` and call the same
//! services as the server (`crate::manage`, `crate::authz::Authorizer`), never a copy of them.

mod check;
mod gc;
mod policy;
mod replay;
mod sessions;
mod status;
mod tokens;

pub use status::fetch_status;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app;
use crate::config::{Config, DEFAULT_MINT_TTL};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Envoy external-authorization sidecar"
)]
pub struct Cli {
    /// Configuration file (YAML). Without it, ./portcullis.yaml if present, else defaults.
    #[arg(long, short, global = true, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Envoy's ext_authz gRPC API and gRPC health.
    Serve,
    /// Create or upgrade the database schema.
    Migrate,
    /// Manage the policy as code.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Decide one request offline and explain why: exit 0 on allow, 1 on deny.
    Check(CheckArgs),
    /// Tokens for operators, demos and tests.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// API tokens for third-party integrations and service accounts.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Login sessions (Sign in with Google): list them, revoke one or all of a user's.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Decide the requests of a decision log again against a candidate policy, offline, and
    /// print those whose outcome would change: exit 0 when none, 1 when some.
    Replay {
        /// A decision log (`log.decisions` output), one JSON event a line.
        log: PathBuf,
        /// The candidate: a policy file applied over the stored policy; without it, the
        /// stored candidate (`policy apply --shadow`).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The file replaces the stored policy whole, as `policy apply --prune` would.
        #[arg(long, requires = "policy")]
        prune: bool,
    },
    /// Explain a logged decision by its id (`x-auth-decision-id`, the deny body): the
    /// caller, what it held, and why no activity matched, then and now.
    Why {
        decision_id: String,
        /// The decision log; default `log.decisions.output` when it is a file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Ask a running portcullis for its snapshot version and age (its admin endpoint).
    Status {
        /// The admin address; default `server.admin_listen`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// Remove expired and revoked tokens, ended sessions and spent codes now (sidecars also
    /// do it every `database.gc_interval`, one at a time).
    Gc,
    /// Non-human identities that reach the system only through API tokens.
    #[command(subcommand, name = "service-account")]
    ServiceAccount(ServiceAccountCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; it is printed once and only its digest is stored.
    Issue {
        #[arg(
            long,
            conflicts_with = "service_account",
            required_unless_present = "service_account"
        )]
        user: Option<String>,
        #[arg(long)]
        service_account: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime, e.g. 90d or 12h; without it the token does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Limit the token to these of its owner's permissions (comma-separated).
        #[arg(long, value_delimiter = ',')]
        permissions: Option<Vec<String>>,
    },
    /// List tokens (never their secrets).
    List {
        /// A user's email or a service account's name.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a token by id; every sidecar stops accepting it within its reload interval.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ServiceAccountCommand {
    /// Create a service account with roles.
    Create {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List service accounts.
    List,
    /// Disable a service account: its tokens stop working.
    Disable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Apply a policy file in one transaction (idempotent).
    Apply {
        file: PathBuf,
        /// Delete permissions, roles and users the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print the changes and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Store the file as the candidate policy instead: every sidecar evaluates it beside
        /// the live one, counts and logs where they disagree, and enforces only the live one.
        #[arg(long)]
        shadow: bool,
    },
    /// Make the candidate policy live on every sidecar, atomically, and drop it.
    Promote,
    /// Drop the candidate policy; the live one is unchanged.
    Discard,
    /// Compare two policy files offline: one line per change; exit 0 when equal, 1 when not.
    Diff { old: PathBuf, new: PathBuf },
    /// Print the stored policy in the policy-file format.
    Export,
    /// Validate a policy file and print lint warnings, without touching the database.
    Lint { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (keys included) without serving.
    Check {
        /// Treat warnings as errors (exit 64).
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A JWT to identify the caller with.
    #[arg(long, conflicts_with = "permissions")]
    pub token: Option<String>,
    /// Act as an identified caller holding these permissions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub permissions: Option<Vec<String>>,
    /// The request's Host.
    #[arg(long, default_value = "")]
    pub host: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Sign a token for a stored user with the configured signing key.
    Mint {
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. 1h or 30m.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Revoke one JWT by its jti, or every JWT of a user issued until now (logout everywhere).
    Revoke {
        #[arg(conflicts_with = "user", required_unless_present = "user")]
        jti: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// The token's `exp` (unix seconds, or RFC 3339 such as 2026-12-01T10:00:00Z): the
        /// revocation is dropped five minutes (the longest leeway) after it, when no sidecar
        /// could accept the token any more. Without it the revocation is kept for ever.
        #[arg(long, conflicts_with = "user", value_parser = parse_unix_time)]
        expires_at: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions, optionally of one user.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a session by id, or every live session of a user; their tokens are refused by
    /// every sidecar within the reload bound.
    Revoke {
        #[arg(conflicts_with = "user", required_unless_present = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

/// A time on the command line: unix seconds, or an RFC 3339 date-time.
fn parse_unix_time(value: &str) -> Result<i64, String> {
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    let time = humantime::parse_rfc3339_weak(value)
        .map_err(|_| format!("{value:?} is neither unix seconds nor an RFC 3339 date-time"))?;
    crate::value::UnixTime::from_system(time)
        .map(crate::value::UnixTime::as_secs)
        .ok_or_else(|| format!("{value:?} is before 1970"))
}

/// Whole seconds since the epoch now; a clock before 1970 is an error, never 0.
fn unix_now() -> anyhow::Result<i64> {
    crate::value::UnixTime::now()
        .map(crate::value::UnixTime::as_secs)
        .ok_or_else(|| anyhow::anyhow!("the system clock is before 1970"))
}

/// Unix seconds as an RFC 3339 date-time, or `None` out of range.
fn rfc3339(secs: i64) -> Option<String> {
    let time = crate::value::UnixTime::from_secs(secs).to_system()?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

/// Process exit codes.
/// 0 yes, 1 no (a deny, a sidecar not serving), 2 bad arguments (clap), 64 bad configuration,
/// 65 a bad policy file, 70 anything else that failed (the store, an unknown name, I/O): a
/// script can tell a deny from an error.
/// The exit codes, one meaning each: the README's "Exit codes" table lists exactly these, and
/// `tests/cli.rs` walks it.
pub mod exit {
    pub const OK: u8 = 0;
    /// `check`: the request is denied.
    pub const DENY: u8 = 1;
    /// `status`: the sidecar is not serving.
    pub const NOT_SERVING: u8 = 1;
    /// `policy diff`, `replay`: there are differences.
    pub const CHANGED: u8 = 1;
    /// EX_SOFTWARE: the command could not do what it was asked.
    pub const FAILURE: u8 = 70;
    /// EX_USAGE: bad configuration or arguments.
    pub const CONFIG: u8 = 64;
    /// EX_DATAERR: a bad policy file (or a stored candidate that no longer compiles).
    pub const DATA: u8 = 65;
    /// EX_NOINPUT: what the command names does not exist: a decision id in the log, a stored
    /// candidate, a user, service account, session, token or permission, the log file.
    pub const NOT_FOUND: u8 = 66;
    /// Bad arguments (what clap itself exits with).
    pub const USAGE: u8 = 2;
}

/// Runs a parsed command; the `u8` is the exit code.
pub async fn run(cli: Cli, config: Config, log_drops: app::LogDrops) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve => {
            let server = app::Server::bind(&config).await?.with_log_drops(log_drops);
            server.run(app::shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Migrate => {
            let store = crate::store::SqlStore::connect(config.database.url.expose(), 1).await?;
            store.migrate().await?;
            println!("database schema is up to date");
            Ok(exit::OK)
        }
        Command::Policy(cmd) => policy::policy_command(cmd, &config).await,
        Command::Config(ConfigCommand::Check { strict }) => {
            let identifier = app::identifier(&config)?;
            if let Some(login) = &config.login {
                // The login keys and secrets, as `serve` reads them (never printed).
                crate::keyring::load_login(login, |k| std::env::var(k).ok())?;
            }
            let warnings = config.warnings();
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if strict && !warnings.is_empty() {
                return Ok(exit::CONFIG);
            }
            println!(
                "config ok: listen {}, {} jwt key(s), database {}",
                config.server.listen,
                identifier.keys().len(),
                if config.database.url.expose().starts_with("sqlite:") {
                    "sqlite"
                } else {
                    "postgres"
                }
            );
            Ok(exit::OK)
        }
        Command::Check(args) => check::check_command(args, &config).await,
        Command::Replay { log, policy, prune } => {
            replay::replay_command(&log, policy.as_deref(), prune, &config).await
        }
        Command::Why { decision_id, log } => {
            replay::why_command(&decision_id, log.as_deref(), &config).await
        }
        Command::Jwt(JwtCommand::Mint { user, ttl }) => {
            tokens::mint_command(&user, ttl.unwrap_or(DEFAULT_MINT_TTL), &config).await
        }
        Command::Token(cmd) => tokens::token_command(cmd, &config).await,
        Command::Jwt(JwtCommand::Revoke {
            jti,
            user,
            expires_at,
        }) => tokens::revoke_jwt_command(jti, user, expires_at, &config).await,
        Command::Session(cmd) => sessions::session_command(cmd, &config).await,
        Command::Status { admin } => status::status_command(admin, &config).await,
        Command::ServiceAccount(cmd) => policy::service_account_command(cmd, &config).await,
        Command::Gc => gc::gc_command(&config).await,
    }
}
