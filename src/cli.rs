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
use crate::policy::document::{ServiceAccountSpec, AUTHENTICATED, PUBLIC};
use crate::policy::{self, PolicyDocument};
use crate::store::{OwnerRef, StoreError};

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
    /// Ask a running portcullis for its snapshot version and age (its admin endpoint).
    Status {
        /// The admin address; default `server.admin_listen`.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
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
    /// Revoke one JWT by its jti, or every JWT of a user issued until now (logout everywhere).
    Revoke {
        #[arg(conflicts_with = "user", required_unless_present = "user")]
        jti: Option<String>,
        #[arg(long)]
        user: Option<String>,
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
        Command::Token(cmd) => token_command(cmd, &config).await,
        Command::Jwt(JwtCommand::Revoke { jti, user }) => {
            let store = app::open_store(&config).await?;
            let result = match (&jti, &user) {
                (_, Some(email)) => store
                    .revoke_user_tokens(email)
                    .await
                    .map(|()| format!("revoked every token of {email} issued until now")),
                (Some(jti), None) => store
                    .revoke_jti(jti)
                    .await
                    .map(|()| format!("revoked jti {jti}")),
                (None, None) => Err(StoreError::NotFound("name a jti or --user".to_owned())),
            };
            store.close().await;
            match result {
                Ok(message) => {
                    println!("{message}");
                    Ok(exit::OK)
                }
                Err(e @ StoreError::NotFound(_)) => {
                    eprintln!("error: {e}");
                    Ok(exit::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status { admin } => {
            let addr = admin
                .or(config.server.admin_listen)
                .context("no admin address: pass --admin")?;
            let body = app::fetch_status(addr).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(if body["serving"] == true {
                exit::OK
            } else {
                exit::FAILURE
            })
        }
        Command::ServiceAccount(cmd) => service_account_command(cmd, &config).await,
    }
}

fn format_time(unix: Option<i64>) -> String {
    match unix {
        Some(t) if t >= 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t as u64))
                .to_string()
        }
        _ => "-".to_owned(),
    }
}

async fn token_command(cmd: TokenCommand, config: &Config) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let result = match cmd {
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
            let expires_at = match expires_in {
                Some(d) => Some(i64::try_from(
                    (SystemTime::now() + d)
                        .duration_since(UNIX_EPOCH)?
                        .as_secs(),
                )?),
                None => None,
            };
            match store
                .issue_token(owner, &label, expires_at, permissions.as_deref())
                .await
            {
                Ok(issued) => {
                    eprintln!(
                        "issued {} (expires {}); the token is shown only now:",
                        issued.id,
                        format_time(expires_at)
                    );
                    println!("{}", issued.token);
                    Ok(exit::OK)
                }
                Err(e @ (StoreError::NotFound(_) | StoreError::Refused(_))) => {
                    eprintln!("error: {e}");
                    Ok(exit::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        TokenCommand::List { owner } => {
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
        TokenCommand::Revoke { id } => match store.revoke_token(&id).await {
            Ok(()) => {
                println!("revoked {id}");
                Ok(exit::OK)
            }
            Err(e @ StoreError::NotFound(_)) => {
                eprintln!("error: {e}");
                Ok(exit::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
    };
    store.close().await;
    result
}

async fn service_account_command(
    cmd: ServiceAccountCommand,
    config: &Config,
) -> anyhow::Result<u8> {
    let store = app::open_store(config).await?;
    let (current, _) = store.load_policy().await?;
    let existing = |name: &str| {
        current
            .service_accounts
            .iter()
            .find(|s| s.name == name)
            .cloned()
    };
    let change = match cmd {
        ServiceAccountCommand::List => {
            for sa in &current.service_accounts {
                println!(
                    "{}{} roles: {}",
                    sa.name,
                    if sa.disabled { " (disabled)" } else { "" },
                    sa.roles.join(",")
                );
            }
            None
        }
        ServiceAccountCommand::Create {
            name,
            roles,
            description,
        } => match existing(&name) {
            Some(_) => {
                eprintln!("error: service account {name:?} already exists");
                store.close().await;
                return Ok(exit::FAILURE);
            }
            None => Some(ServiceAccountSpec {
                name,
                description,
                disabled: false,
                roles,
            }),
        },
        ServiceAccountCommand::Disable { name } => match existing(&name) {
            Some(sa) => Some(ServiceAccountSpec {
                disabled: true,
                ..sa
            }),
            None => {
                eprintln!("error: no service account {name:?}");
                store.close().await;
                return Ok(exit::FAILURE);
            }
        },
    };
    let code = match change {
        None => exit::OK,
        Some(spec) => {
            let doc = PolicyDocument {
                service_accounts: vec![spec],
                ..PolicyDocument::default()
            };
            match store.apply(&doc, false, false).await {
                Ok(outcome) => {
                    for line in &outcome.changes {
                        println!("{line}");
                    }
                    exit::OK
                }
                Err(StoreError::Policy(e)) => {
                    eprintln!("error: {}", error_chain(&e));
                    exit::DATA
                }
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            }
        }
    };
    store.close().await;
    Ok(code)
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

pub use crate::error_chain;

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
            limit: None,
            issued_at: None,
            expires_at: f64::MAX,
            token_id: None,
        };
        authz::decide_with(
            &snapshot,
            &args.method,
            &args.host,
            &canonical,
            Some(Arc::new(principal)),
            config.jwt.permissions_from,
        )
    } else {
        let handle = Arc::new(arc_swap::ArcSwapOption::from(Some(snapshot.clone())));
        let lookup = app::open_store(config).await?;
        let authorizer = Authorizer::new(
            handle,
            Arc::new(app::identifier_with_store(config, lookup)?),
        )
        .with_permission_source(config.jwt.permissions_from);
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
            let detail = d.detail.as_deref().unwrap_or("");
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
