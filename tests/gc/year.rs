//! A year of normal use, one simulated day at a time, with a housekeeping round at the end of
//! each day: API tokens issued (most expiring in 30 days) and revoked, JWTs revoked (a few with
//! no known expiry), sign-ins with rotated refresh tokens and handoff codes, half of them
//! logged out, a policy change a week. After every round each table holds exactly the rows the
//! model says can still matter; the bound comes from live data, never from elapsed time.

use super::*;

const DAY: i64 = 86_400;
const TOKEN_LIFETIME: i64 = 30 * DAY;
const SESSION_LIFETIME: i64 = 7 * DAY;
const SIGN_INS_PER_DAY: usize = 6;
const ROTATIONS: usize = 2;
/// Versions the change log keeps (`store::sql::CHANGE_LOG_VERSIONS`).
const CHANGE_LOG_VERSIONS: i64 = 10_000;

#[derive(Default)]
struct Model {
    /// Live tokens: id and expiry (revoked ones leave the model).
    tokens: Vec<(String, Option<i64>)>,
    /// Revoked JWT ids' expiries (None: unknown).
    jtis: Vec<Option<i64>>,
    /// Sessions not logged out: expiry.
    sessions: Vec<i64>,
    created: std::collections::BTreeMap<&'static str, i64>,
}

impl Model {
    fn created(&mut self, table: &'static str, rows: i64) {
        *self.created.entry(table).or_default() += rows;
    }

    /// Rows that can still matter at `now`, per table.
    fn live(&self, now: i64) -> [(&'static str, i64); 5] {
        let settled = now - GRACE;
        let n = |it: usize| i64::try_from(it).unwrap();
        let sessions = n(self.sessions.iter().filter(|e| **e >= settled).count());
        [
            (
                "api_tokens",
                n(self
                    .tokens
                    .iter()
                    .filter(|(_, e)| e.is_none_or(|e| e >= settled))
                    .count()),
            ),
            (
                "revoked_jtis",
                n(self
                    .jtis
                    .iter()
                    .filter(|e| e.is_none_or(|e| e >= settled))
                    .count()),
            ),
            ("sessions", sessions),
            ("refresh_tokens", sessions * n(1 + ROTATIONS)),
            // Codes live a minute: none is left by the end of a day.
            ("handoff_codes", 0),
        ]
    }
}

async fn one_day(store: &SqlStore, model: &mut Model, day: i64, t: i64) {
    let ada = OwnerRef::User("ada@example.com");
    for i in 0..4 {
        let expires = (i < 3).then_some(t + TOKEN_LIFETIME);
        let issued = manage::issue_token(store, ada, "", t, expires, None)
            .await
            .unwrap();
        model.tokens.push((issued.id, expires));
    }
    model.created("api_tokens", 4);
    // Revoke the oldest non-expiring token once there are more than ten.
    let forever: Vec<usize> = (0..model.tokens.len())
        .filter(|i| model.tokens[*i].1.is_none())
        .collect();
    if forever.len() > 10 {
        let (id, _) = model.tokens.remove(forever[0]);
        store.revoke_token(&id).await.unwrap();
    }
    for i in 0..8 {
        let exp = Some(t + 3600);
        store.revoke_jti(&format!("d{day}-{i}"), exp).await.unwrap();
        model.jtis.push(exp);
    }
    model.created("revoked_jtis", 8);
    if day % 7 == 0 {
        store.revoke_jti(&format!("d{day}-x"), None).await.unwrap();
        model.jtis.push(None);
        model.created("revoked_jtis", 1);
        // A weekly policy change (a new description), so the log also holds whole changes.
        let text = POLICY.replace(
            "activities:",
            &format!("description: week {day}\n    activities:"),
        );
        let doc = PolicyDocument::from_yaml("t", &text).unwrap();
        manage::apply(store, &doc, false, false).await.unwrap();
    }
    for i in 0..SIGN_INS_PER_DAY {
        let n = (day as usize * SIGN_INS_PER_DAY + i) % 30;
        let email: &'static str = Box::leak(format!("u{n}@example.com").into_boxed_str());
        let subject: &'static str = Box::leak(format!("u{n}").into_boxed_str());
        let uid = user_id(store, email, subject, t).await;
        let sid = format!("s{day}-{i}");
        let expires = t + SESSION_LIFETIME;
        let mut refresh = digest(&format!("{sid}-r0"));
        store
            .create_session(&sid, uid, t, expires, Some(&refresh))
            .await
            .unwrap();
        for r in 1..=ROTATIONS {
            let next = digest(&format!("{sid}-r{r}"));
            store.rotate_refresh(&refresh, &next, t + 60).await.unwrap();
            refresh = next;
        }
        let code = digest(&format!("{sid}-code"));
        store
            .insert_handoff(&code, &sid, "https://app.example", t + 60)
            .await
            .unwrap();
        if i % 2 == 0 {
            assert!(store.take_handoff(&code, t + 1).await.unwrap().is_some());
            model.sessions.push(expires);
        } else {
            // Logged out an hour later: the session id is revoked until it would expire.
            assert!(store
                .revoke_session(&sid, "logout", t + 3600)
                .await
                .unwrap());
            model.jtis.push(Some(expires));
            model.created("revoked_jtis", 1);
        }
    }
    let sign_ins = i64::try_from(SIGN_INS_PER_DAY).unwrap();
    model.created("sessions", sign_ins);
    model.created(
        "refresh_tokens",
        sign_ins * i64::try_from(1 + ROTATIONS).unwrap(),
    );
    model.created("handoff_codes", sign_ins);
}

pub(super) async fn simulate(store: &SqlStore, pool: &sqlx::AnyPool) {
    let doc = PolicyDocument::from_yaml("t", POLICY).unwrap();
    manage::apply(store, &doc, false, false).await.unwrap();
    // Simulated days start now: revocations stamped with the real clock are in the past.
    let start = unix_now();
    let mut model = Model::default();
    let mut most = std::collections::BTreeMap::<&str, i64>::new();
    for day in 0..365 {
        let t = start + day * DAY;
        one_day(store, &mut model, day, t).await;
        let end = t + DAY - 1;
        removed(store.collect_garbage(end).await.unwrap());
        for (table, live) in model.live(end) {
            let rows = count(pool, table).await;
            assert_eq!(
                rows, live,
                "{table} on day {day}: rows that can still matter only"
            );
            let slot = most.entry(table).or_default();
            *slot = (*slot).max(rows);
        }
        assert!(count(pool, "policy_changes").await <= CHANGE_LOG_VERSIONS);
        assert!(count(pool, "users").await <= 31);
        assert!(count(pool, "user_identities").await <= 30);
    }
    // What a year created against the most any table held: bounded by live data (tokens
    // living 30 days, sessions 7, revocations until their token's expiry), not by time.
    for (table, created) in &model.created {
        let most = most[table];
        assert!(
            most * 10 < *created,
            "{table}: at most {most} rows of {created} created in a year"
        );
    }
    let version = store.policy_version().await.unwrap();
    assert!(
        version > CHANGE_LOG_VERSIONS / 2,
        "a busy year: {version} versions"
    );
}
