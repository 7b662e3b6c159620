//! Command-line interface: clap definitions and one handler per command. Handlers get a loaded
//! `Config`; they never read files or the environment themselves beyond what they are given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::app;
use crate::authz::{self, AccessRequest, Authorizer, Decision};
use crate::config::{Config, DEFAULT_MINT_TTL};
use crate::identity::{CredentialKind, Principal, SubjectType};
use crate::policy::document::{AUTHENTICATED, PUBLIC};
use crate::policy::{self, PolicyDocument};

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
    },
    /// Print the stored policy in the policy-file format.
    Export,
    /// Validate a policy file and print lint warnings, without touching the database.
    Lint { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (keys included) without serving.
    Check,
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
}

/// Process exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    pub const DENY: u8 = 1;
    pub const FAILURE: u8 = 1;
    /// EX_USAGE: bad configuration or arguments.
    pub const CONFIG: u8 = 64;
    /// EX_DATAERR: a bad policy file.
    pub const DATA: u8 = 65;
}

/// Runs a parsed command; the `u8` is the exit code.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve => {
            let server = app::Server::bind(&config).await?;
            server.run(app::shutdown_signal()).await?;
            Ok(exit::OK)
        }
        Command::Migrate => {
            let store = crate::store::Store::connect(config.database.url.expose(), 1).await?;
            store.migrate().await?;
            println!("database schema is up to date");
            Ok(exit::OK)
        }
        Command::Policy(cmd) => policy_command(cmd, &config).await,
        Command::Config(ConfigCommand::Check) => {
            let identifier = app::identifier(&config)?;
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
        Command::Check(args) => check_command(args, &config).await,
        Command::Jwt(JwtCommand::Mint { user, ttl }) => {
            mint_command(&user, ttl.unwrap_or(DEFAULT_MINT_TTL), &config).await
        }
    }
}

fn read_policy(file: &PathBuf) -> Result<PolicyDocument, u8> {
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
            for warning in policy::document::lint(&doc) {
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

/// `error: a: b: c` for an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn policy_command(cmd: PolicyCommand, config: &Config) -> anyhow::Result<u8> {
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
        } => {
            let doc = match read_policy(&file) {
                Ok(doc) => doc,
                Err(code) => return Ok(code),
            };
            let store = app::open_store(config).await?;
            let outcome = match store.apply(&doc, prune, dry_run).await {
                Ok(o) => o,
                Err(crate::store::StoreError::Policy(e)) => {
                    eprintln!("error: {}: {}", file.display(), error_chain(&e));
                    return Ok(exit::DATA);
                }
                Err(e) => return Err(e.into()),
            };
            for line in &outcome.changes {
                println!("{line}");
            }
            let verb = if dry_run { "would apply" } else { "applied" };
            if outcome.changes.is_empty() {
                println!("no changes (policy version {})", outcome.version);
            } else if dry_run {
                println!(
                    "{verb} {} change(s); nothing written (dry run)",
                    outcome.changes.len()
                );
            } else {
                println!(
                    "{verb} {} change(s); policy version {}",
                    outcome.changes.len(),
                    outcome.version
                );
            }
            store.close().await;
            Ok(exit::OK)
        }
        PolicyCommand::Export => {
            let store = app::open_store(config).await?;
            let (doc, _) = store.load_policy().await?;
            print!("{}", doc.to_yaml()?);
            store.close().await;
            Ok(exit::OK)
        }
    }
}

async fn check_command(args: CheckArgs, config: &Config) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let snapshot = Arc::new(store.load_snapshot().await?);
    store.close().await;
    let decision = if let Some(perms) = args.permissions {
        let canonical = match policy::path::canonicalize(&args.path) {
            Ok(p) => p,
            Err(e) => {
                println!("deny 403 invalid_path: {e}");
                return Ok(exit::DENY);
            }
        };
        let principal = Principal {
            subject_type: SubjectType::User,
            credential: CredentialKind::Jwt,
            user_id: "cli".to_owned(),
            email: None,
            name: None,
            roles: Vec::new(),
            permissions: perms,
            expires_at: f64::MAX,
            token_id: None,
        };
        authz::decide_with(
            &snapshot,
            &args.method,
            &args.host,
            &canonical,
            Some(Arc::new(principal)),
        )
    } else {
        let handle = Arc::new(arc_swap::ArcSwapOption::from(Some(snapshot.clone())));
        let authorizer = Authorizer::new(handle, Arc::new(app::identifier(config)?));
        let bearer = args.token.as_ref().map(|t| format!("Bearer {t}"));
        let request = AccessRequest {
            method: &args.method,
            host: &args.host,
            path: &args.path,
            headers: bearer
                .iter()
                .map(|b| ("authorization", b.as_str().into()))
                .collect(),
        };
        authorizer.decide(&request).await
    };
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
            match d.reason {
                authz::Reason::NoMatchingActivity | authz::Reason::MissingCredential => {
                    let p = d.principal.as_ref();
                    let held: Vec<&str> = p
                        .map(|p| p.permissions.iter().map(String::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "deny {status} {}: no activity granted to this caller matches {} {} (holds {}{}{})",
                        d.reason.code(),
                        args.method,
                        args.path,
                        PUBLIC,
                        if p.is_some() { format!(",{AUTHENTICATED}") } else { String::new() },
                        held.iter().map(|h| format!(",{h}")).collect::<String>(),
                    );
                }
                _ => println!(
                    "deny {status} {}: {}",
                    d.reason.code(),
                    d.detail.as_deref().unwrap_or("")
                ),
            }
            Ok(exit::DENY)
        }
    }
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
    iat: u64,
    exp: u64,
    jti: String,
}

async fn mint_command(email: &str, ttl: Duration, config: &Config) -> anyhow::Result<u8> {
    let identifier = app::identifier(config)?;
    if config.jwt.signing_key.is_none() {
        bail!("jwt.signing_key is not configured: name the kid to sign with");
    }
    let store = app::open_store(config).await?;
    let user = store
        .find_user(email)
        .await?
        .with_context(|| format!("no user {email:?} in the store"))?;
    if user.disabled {
        bail!("user {email:?} is disabled");
    }
    let snapshot = store.load_snapshot().await?;
    store.close().await;
    let grants = snapshot.grants(true, [], user.roles.iter().map(String::as_str));
    let mut permissions: Vec<String> = grants
        .ids()
        .map(|id| snapshot.permission_name(id).to_owned())
        .filter(|n| n != PUBLIC && n != AUTHENTICATED)
        .collect();
    permissions.sort_unstable();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = MintClaims {
        sub: user.id.to_string(),
        email: Some(&user.email),
        name: user.name.as_deref(),
        roles: &user.roles,
        permissions,
        iss: config.jwt.issuer.as_deref(),
        aud: (!config.jwt.audience.is_empty()).then_some(config.jwt.audience.as_slice()),
        iat: now,
        exp: now + ttl.as_secs(),
        jti: format!("{:032x}", rand::random::<u128>()),
    };
    println!("{}", identifier.keys().mint(&claims)?);
    Ok(exit::OK)
}
