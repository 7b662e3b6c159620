//! A per-request-SQL ext_authz baseline, bench-only and apart from the product: what the
//! original design did for every request, so that `make load` can show what keeping the
//! database off the request path is worth (configuration e).
//!
//! At start it creates and fills its own tables (`bench_permissions`, `bench_activities`,
//! `bench_permission_activities`) from a policy file, in the database it is given. For every
//! `Check` it identifies the caller as portcullis does (the same `Identifier`, so a JWT is
//! verified once and then cached), expands the token's roles and permissions to permission
//! ids in memory, and asks PostgreSQL whether any of them grants the request:
//!
//! ```sql
//! SELECT COUNT(*) FROM bench_activities a
//!   JOIN bench_permission_activities pa ON pa.activity_id = a.id
//!  WHERE a.method = $1 AND $2 ~ a.url_regex AND pa.permission_id = ANY($3)
//! ```
//!
//! Allowed: OK with `x-auth-user-id`; not granted: 403 (401 when no credential); the database
//! failing: 503. Hosts are ignored. Accepted sockets get `TCP_NODELAY`; gRPC health reports
//! SERVING, so the bench Envoy config fronts it unchanged.
//!
//! ```text
//! cargo run --release --example sql_baseline_authz -- --listen 127.0.0.1:9201 \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres \
//!     --public-key tests/data/keys/rs256.pub.pem --kid bench-rs256 \
//!     --issuer portcullis-bench --audience portcullis
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use portcullis::identity::{
    ClaimRules, Identified, Identifier, JwtSettings, KeySet, Principal, VerifyingKey,
};
use portcullis::policy::{path, PolicyDocument};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(about = "A bench-only ext_authz server that asks PostgreSQL on every Check")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9201")]
    listen: String,
    /// The database to create the bench tables in (they are dropped and re-created).
    #[arg(long)]
    database_url: String,
    /// Connections in the pool the per-request queries share.
    #[arg(long, default_value_t = 8)]
    pool: u32,
    #[arg(long, default_value = "examples/policy.yaml")]
    policy: PathBuf,
    /// The PEM public key JWTs are verified with (RS256).
    #[arg(long)]
    public_key: PathBuf,
    #[arg(long, default_value = "bench-rs256")]
    kid: String,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    audience: Vec<String>,
    #[arg(long, default_value = "jwt-token")]
    cookie_name: String,
}

const QUERY: &str = "SELECT COUNT(*) FROM bench_activities a \
    JOIN bench_permission_activities pa ON pa.activity_id = a.id \
    WHERE a.method = $1 AND $2 ~ a.url_regex AND pa.permission_id = ANY($3)";

struct Baseline {
    pool: PgPool,
    identifier: Identifier,
    permission_ids: HashMap<String, i32>,
    role_permissions: HashMap<String, Vec<i32>>,
}

fn denied(code: rpc::Code, http: i32) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn allowed(user: &str) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "x-auth-user-id".to_owned(),
                    value: user.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

impl Baseline {
    /// The permission ids a caller holds: `public`, and for an identified caller
    /// `authenticated`, its token's permissions and its roles' permissions.
    fn permission_ids(&self, principal: Option<&Principal>) -> Vec<i32> {
        let mut ids = BTreeSet::new();
        ids.extend(self.permission_ids.get("public"));
        if let Some(p) = principal {
            ids.extend(self.permission_ids.get("authenticated"));
            if let Principal::Jwt(jwt) = p {
                ids.extend(
                    jwt.permissions
                        .iter()
                        .filter_map(|n| self.permission_ids.get(n)),
                );
                for role in &jwt.roles {
                    ids.extend(self.role_permissions.get(role).into_iter().flatten());
                }
            }
        }
        ids.into_iter().collect()
    }

    async fn decide(&self, request: &CheckRequest) -> CheckResponse {
        let Some(http) = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            return denied(rpc::Code::PermissionDenied, 403);
        };
        let headers: Vec<(&str, String)> = match &http.header_map {
            Some(map) => map
                .headers
                .iter()
                .map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    };
                    (h.key.as_str(), value)
                })
                .collect(),
            None => http
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
        };
        let Ok(canonical) = path::canonicalize(&http.path) else {
            return denied(rpc::Code::PermissionDenied, 403);
        };
        // The baseline identifies JWT callers only (the original design had no API tokens).
        let principal = match self
            .identifier
            .identify(headers.iter().map(|(k, v)| (*k, v.as_str())))
        {
            Ok(Identified::Caller(p)) => Some(p),
            Ok(Identified::Nobody) => None,
            Ok(Identified::ApiToken(_)) | Err(_) => return denied(rpc::Code::Unauthenticated, 401),
        };
        let ids = self.permission_ids(principal.as_deref());
        let count: Result<i64, sqlx::Error> = sqlx::query_scalar(QUERY)
            .bind(&http.method)
            .bind(canonical.as_ref())
            .bind(&ids)
            .fetch_one(&self.pool)
            .await;
        match (count, principal) {
            (Ok(n), Some(p)) if n > 0 => allowed(&p.subject_id()),
            (Ok(n), None) if n > 0 => allowed("anonymous"),
            (Ok(_), None) => denied(rpc::Code::Unauthenticated, 401),
            (Ok(_), Some(_)) => denied(rpc::Code::PermissionDenied, 403),
            (Err(_), _) => denied(rpc::Code::Unavailable, 503),
        }
    }
}

struct Service(Arc<Baseline>);

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(&self, r: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.0.decide(r.get_ref()).await))
    }
}

/// Drops and re-creates the bench tables and fills them from `doc`; returns the permission ids
/// by name and the permission ids of each role.
async fn fill_tables(
    pool: &PgPool,
    doc: &PolicyDocument,
) -> anyhow::Result<(HashMap<String, i32>, HashMap<String, Vec<i32>>)> {
    let mut tx = pool.begin().await?;
    for statement in [
        "DROP TABLE IF EXISTS bench_permission_activities, bench_activities, bench_permissions",
        "CREATE TABLE bench_permissions (id SERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE bench_activities (id SERIAL PRIMARY KEY, method TEXT NOT NULL, \
         url_regex TEXT NOT NULL)",
        "CREATE TABLE bench_permission_activities (\
         permission_id INT NOT NULL REFERENCES bench_permissions(id), \
         activity_id INT NOT NULL REFERENCES bench_activities(id), \
         PRIMARY KEY (permission_id, activity_id))",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    let mut ids = HashMap::new();
    for (name, spec) in &doc.permissions {
        let id: i32 =
            sqlx::query_scalar("INSERT INTO bench_permissions (name) VALUES ($1) RETURNING id")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        ids.insert(name.clone(), id);
        for activity in &spec.activities {
            // Policy regexes match the whole canonical path.
            let regex = format!("^(?:{})$", activity.path);
            let activity_id: i32 = sqlx::query_scalar(
                "INSERT INTO bench_activities (method, url_regex) VALUES ($1, $2) RETURNING id",
            )
            .bind(activity.method.as_str())
            .bind(&regex)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO bench_permission_activities (permission_id, activity_id) \
                 VALUES ($1, $2)",
            )
            .bind(id)
            .bind(activity_id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let roles = doc
        .roles
        .iter()
        .map(|(role, permissions)| {
            let held = permissions.iter().filter_map(|p| ids.get(p).copied());
            (role.clone(), held.collect())
        })
        .collect();
    Ok((ids, roles))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read {}", args.policy.display()))?;
    let doc = PolicyDocument::from_yaml(&args.policy.display().to_string(), &text)?;
    let pem = std::fs::read(&args.public_key)
        .with_context(|| format!("cannot read {}", args.public_key.display()))?;
    let key = VerifyingKey::from_pem(&args.kid, jsonwebtoken::Algorithm::RS256, &pem)?;
    let identifier = Identifier::new(
        KeySet::new([key], None)?,
        JwtSettings {
            rules: ClaimRules {
                issuer: args.issuer.clone(),
                audience: args.audience.clone(),
                leeway: Duration::from_secs(30),
            },
            cookie_name: args.cookie_name.clone(),
            cache_ttl: Duration::from_secs(300),
            cache_capacity: 100_000,
        },
    );
    let pool = PgPoolOptions::new()
        .max_connections(args.pool)
        .min_connections(args.pool)
        .acquire_timeout(Duration::from_millis(400))
        .connect(&args.database_url)
        .await
        .context("cannot connect to the database")?;
    let (permission_ids, role_permissions) = fill_tables(&pool, &doc).await?;
    let baseline = Arc::new(Baseline {
        pool,
        identifier,
        permission_ids,
        role_permissions,
    });

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            "envoy.service.auth.v3.Authorization",
            tonic_health::ServingStatus::Serving,
        )
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(Service(baseline)))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
