//! Writing a policy: the difference between the stored document and the next one, in a few
//! set-based statements per kind of entity. Entities that did not change are not touched, so
//! ids (a user id is a JWT `sub`) stay stable; a deleted user leaves a tombstone.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sqlx::AnyConnection;

use super::{now_unix, Dialect};
use crate::policy::document::{PermissionSpec, ServiceAccountSpec, UserSpec};
use crate::policy::PolicyDocument;
use crate::store::StoreError;

/// Rows per bulk statement.
const BULK_ROWS: usize = 5_000;

/// A SELECT of text columns `c0`..`c3` from `$1`, a JSON array of arrays: the one way to hand a
/// bulk write to both databases through the `Any` driver (which has no array binds).
fn json_rows(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "SELECT json_extract(value, '$[0]') AS c0, json_extract(value, '$[1]') AS c1, \
             json_extract(value, '$[2]') AS c2, json_extract(value, '$[3]') AS c3 FROM json_each($1)"
        }
        Dialect::Postgres => {
            "SELECT value->>0 AS c0, value->>1 AS c1, value->>2 AS c2, value->>3 AS c3 \
             FROM jsonb_array_elements(CAST($1 AS jsonb))"
        }
    }
}

/// Runs each statement (which reads its rows from `{rows}`) over `rows`, in chunks.
async fn bulk(
    conn: &mut AnyConnection,
    dialect: Dialect,
    statements: &[&str],
    rows: &[Value],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    for statement in statements {
        let sql = statement.replace("{rows}", json_rows(dialect));
        for chunk in rows.chunks(BULK_ROWS) {
            let json = Value::Array(chunk.to_vec()).to_string();
            sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// The statements that keep one kind of named entity and its links in step with the policy.
/// Rows name the entity in `c0`.
struct EntitySql {
    /// Inserts or updates changed entities from their `upserts` rows.
    upsert: &'static [&'static str],
    /// Drops the links of changed entities (they are relinked from `links`).
    unlink: &'static [&'static str],
    /// Links `[entity, target, …]` rows.
    link: &'static [&'static str],
    /// Deletes removed entities (`[entity, deleted_at]` rows), links first.
    remove: &'static [&'static str],
}

/// What changes for one kind of entity.
#[derive(Default)]
struct EntityChanges {
    upserts: Vec<Value>,
    changed: Vec<Value>,
    links: Vec<Value>,
    removed: Vec<Value>,
}

impl EntityChanges {
    /// Compares two name-keyed maps: `row` is an entity's upsert row, `links` its link rows.
    fn between<T: PartialEq>(
        before: &BTreeMap<&str, &T>,
        after: &BTreeMap<&str, &T>,
        deleted_at: &str,
        row: impl Fn(&str, &T) -> Value,
        links: impl Fn(&str, &T) -> Vec<Value>,
    ) -> Self {
        let mut out = EntityChanges::default();
        for (name, entity) in after {
            if before.get(name) != Some(entity) {
                out.upserts.push(row(name, entity));
                out.changed.push(json!([name]));
                out.links.extend(links(name, entity));
            }
        }
        out.removed = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .map(|name| json!([name, deleted_at]))
            .collect();
        out
    }

    async fn write(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        sql: &EntitySql,
    ) -> Result<(), StoreError> {
        bulk(conn, dialect, sql.upsert, &self.upserts).await?;
        bulk(conn, dialect, sql.unlink, &self.changed).await?;
        bulk(conn, dialect, sql.link, &self.links).await?;
        bulk(conn, dialect, sql.remove, &self.removed).await
    }
}

const PERMISSIONS: EntitySql = EntitySql {
    upsert: &["INSERT INTO permissions (name, description) SELECT c0, c1 FROM ({rows}) j WHERE true \
               ON CONFLICT (name) DO UPDATE SET description = excluded.description"],
    unlink: &["DELETE FROM permission_activities WHERE permission_id IN \
               (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)"],
    link: &[
        "INSERT INTO activities (method, path, host) SELECT c1, c2, c3 FROM ({rows}) j WHERE true \
         ON CONFLICT (method, path, host) DO NOTHING",
        "INSERT INTO permission_activities (permission_id, activity_id) SELECT DISTINCT p.id, a.id FROM ({rows}) j \
         JOIN permissions p ON p.name = j.c0 JOIN activities a ON a.method = j.c1 AND a.path = j.c2 AND a.host = j.c3",
    ],
    remove: &[
        "DELETE FROM permission_activities WHERE permission_id IN \
         (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)",
        "DELETE FROM role_permissions WHERE permission_id IN (SELECT p.id FROM permissions p JOIN ({rows}) j ON p.name = j.c0)",
        "DELETE FROM permissions WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ],
};

const ROLES: EntitySql = EntitySql {
    upsert: &["INSERT INTO roles (name) SELECT c0 FROM ({rows}) j WHERE true ON CONFLICT (name) DO NOTHING"],
    unlink: &["DELETE FROM role_permissions WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)"],
    link: &["INSERT INTO role_permissions (role_id, permission_id) SELECT r.id, p.id FROM ({rows}) j \
             JOIN roles r ON r.name = j.c0 JOIN permissions p ON p.name = j.c1"],
    remove: &[
        "DELETE FROM role_permissions WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM user_roles WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM service_account_roles WHERE role_id IN (SELECT r.id FROM roles r JOIN ({rows}) j ON r.name = j.c0)",
        "DELETE FROM roles WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ],
};

const USERS: EntitySql = EntitySql {
    upsert: &["INSERT INTO users (email, name, disabled) SELECT c0, c1, CAST(c2 AS BIGINT) FROM ({rows}) j WHERE true \
               ON CONFLICT (email) DO UPDATE SET name = excluded.name, disabled = excluded.disabled"],
    unlink: &["DELETE FROM user_roles WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)"],
    link: &["INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM ({rows}) j \
             JOIN users u ON u.email = j.c0 JOIN roles r ON r.name = j.c1"],
    remove: &[
        // A tombstone: tokens naming a deleted user's id are refused in every mode.
        "INSERT INTO deleted_users (id, email, deleted_at) SELECT u.id, u.email, CAST(j.c1 AS BIGINT) \
         FROM users u JOIN ({rows}) j ON u.email = j.c0 WHERE true ON CONFLICT (id) DO NOTHING",
        "DELETE FROM user_roles WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)",
        "DELETE FROM api_tokens WHERE user_id IN (SELECT u.id FROM users u JOIN ({rows}) j ON u.email = j.c0)",
        "DELETE FROM users WHERE email IN (SELECT c0 FROM ({rows}) j)",
    ],
};

const SERVICE_ACCOUNTS: EntitySql = EntitySql {
    upsert: &["INSERT INTO service_accounts (name, description, disabled) SELECT c0, c1, CAST(c2 AS BIGINT) FROM ({rows}) j \
               WHERE true ON CONFLICT (name) DO UPDATE SET description = excluded.description, disabled = excluded.disabled"],
    unlink: &["DELETE FROM service_account_roles WHERE service_account_id IN \
               (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)"],
    link: &["INSERT INTO service_account_roles (service_account_id, role_id) SELECT s.id, r.id FROM ({rows}) j \
             JOIN service_accounts s ON s.name = j.c0 JOIN roles r ON r.name = j.c1"],
    remove: &[
        "DELETE FROM service_account_roles WHERE service_account_id IN \
         (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)",
        "DELETE FROM api_tokens WHERE service_account_id IN \
         (SELECT s.id FROM service_accounts s JOIN ({rows}) j ON s.name = j.c0)",
        "DELETE FROM service_accounts WHERE name IN (SELECT c0 FROM ({rows}) j)",
    ],
};

fn flag(b: bool) -> String {
    i64::from(b).to_string()
}

type ByName<'a> = (
    BTreeMap<&'a str, &'a PermissionSpec>,
    BTreeMap<&'a str, &'a Vec<String>>,
    BTreeMap<&'a str, &'a UserSpec>,
    BTreeMap<&'a str, &'a ServiceAccountSpec>,
);

/// Every entity of a document by name.
fn by_name(doc: &PolicyDocument) -> ByName<'_> {
    (
        doc.permissions
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
        doc.roles.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        doc.users.iter().map(|u| (u.email.as_str(), u)).collect(),
        doc.service_accounts
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect(),
    )
}

/// Writes the difference between `current` and `next`. Order matters: permissions before the
/// roles that link them, roles before the users and service accounts that hold them.
pub(super) async fn changes(
    conn: &mut AnyConnection,
    dialect: Dialect,
    current: &PolicyDocument,
    next: &PolicyDocument,
) -> Result<(), StoreError> {
    let deleted_at = now_unix().to_string();
    let (perms_a, roles_a, users_a, accounts_a) = by_name(current);
    let (perms_b, roles_b, users_b, accounts_b) = by_name(next);

    EntityChanges::between(
        &perms_a,
        &perms_b,
        &deleted_at,
        |n, s| json!([n, s.description]),
        |n, s| {
            s.activities
                .iter()
                .map(|a| {
                    json!([
                        n,
                        a.method.as_str(),
                        a.path,
                        a.host.clone().unwrap_or_default()
                    ])
                })
                .collect()
        },
    )
    .write(conn, dialect, &PERMISSIONS)
    .await?;
    sqlx::query(
        "DELETE FROM activities WHERE id NOT IN (SELECT activity_id FROM permission_activities)",
    )
    .execute(&mut *conn)
    .await?;
    EntityChanges::between(
        &roles_a,
        &roles_b,
        &deleted_at,
        |n, _| json!([n]),
        |n, ps| ps.iter().map(|p| json!([n, p])).collect(),
    )
    .write(conn, dialect, &ROLES)
    .await?;
    EntityChanges::between(
        &users_a,
        &users_b,
        &deleted_at,
        |e, u| json!([e, u.name, flag(u.disabled)]),
        |e, u| u.roles.iter().map(|r| json!([e, r])).collect(),
    )
    .write(conn, dialect, &USERS)
    .await?;
    EntityChanges::between(
        &accounts_a,
        &accounts_b,
        &deleted_at,
        |n, s| json!([n, s.description, flag(s.disabled)]),
        |n, s| s.roles.iter().map(|r| json!([n, r])).collect(),
    )
    .write(conn, dialect, &SERVICE_ACCOUNTS)
    .await
}
