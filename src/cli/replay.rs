//! `portcullis replay` and `portcullis why`: decision logs read back. Replay decides every
//! logged request again against a candidate policy and prints those whose outcome changes;
//! why explains one logged decision: the caller, what it held then and now, and why no
//! activity matched.

use std::io::BufRead as _;
use std::path::Path;

use super::{exit, policy::read_policy};
use crate::app::event::{parse_line, LogLine};
use crate::app::replay::{describe, LoggedDecision};
use crate::app::{self, DecisionOutput};
use crate::authz::{Decision, DenyCause, JwtSubjects};
use crate::config::Config;
use crate::manage;
use crate::policy::PolicySnapshot;
use crate::store::{Candidate, PolicyStore};

fn jwt_subjects(config: &Config) -> JwtSubjects {
    JwtSubjects {
        permissions_from: config.jwt.permissions_from,
        subject_claim: config.jwt.subject_claim,
    }
}

/// Every decision event of a log, with its line number; lines that are not JSON are reported
/// on stderr and counted.
fn read_log(log: &Path) -> anyhow::Result<(Vec<(usize, LoggedDecision)>, usize)> {
    let file = std::fs::File::open(log)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", log.display()))?;
    let (mut events, mut malformed) = (Vec::new(), 0);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(LogLine::Decision(event)) => events.push((n + 1, *event)),
            Ok(LogLine::DecisionsDropped(_)) => {}
            Err(e) => {
                if malformed == 0 {
                    eprintln!(
                        "warning: {}:{}: {}",
                        log.display(),
                        n + 1,
                        crate::error_chain(&e)
                    );
                }
                malformed += 1;
            }
        }
    }
    Ok((events, malformed))
}

pub(super) async fn replay_command(
    log: &Path,
    policy: Option<&Path>,
    prune: bool,
    config: &Config,
) -> anyhow::Result<u8> {
    let file = match policy.map(read_policy).transpose() {
        Ok(file) => file,
        Err(code) => return Ok(code),
    };
    let (events, malformed) = match read_log(log) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::NOT_FOUND);
        }
    };
    let store = app::open_store(config).await?;
    let state = store.load_state().await;
    store.close().await;
    let state = state?;
    let candidate = match (file, state.candidate.clone()) {
        (Some(file), _) => Candidate {
            file,
            prune,
            created_at: 0,
        },
        (None, Some(stored)) => stored,
        (None, None) => {
            eprintln!("error: no candidate: pass --policy FILE, or store one with `policy apply FILE --shadow`");
            return Ok(exit::NOT_FOUND);
        }
    };
    let snapshot = match manage::compile_candidate(
        &state.document,
        &state.subjects,
        &candidate,
        state.version,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: the candidate policy: {}", crate::error_chain(&e));
            return Ok(exit::DATA);
        }
    };
    let jwt = jwt_subjects(config);
    let (mut replayed, mut skipped, mut to_deny, mut to_allow) = (0, 0, 0, 0);
    for (line, event) in &events {
        if !event.replayable() {
            skipped += 1;
            continue;
        }
        let decision = match event.redecide(&snapshot, jwt) {
            Ok(d) => d,
            Err(why) => {
                eprintln!("warning: {}:{line}: not replayed: {why}", log.display());
                skipped += 1;
                continue;
            }
        };
        replayed += 1;
        let now_allowed = matches!(decision, Decision::Allow(_));
        if now_allowed == event.allowed() {
            continue;
        }
        if now_allowed {
            to_allow += 1;
        } else {
            to_deny += 1;
        }
        println!(
            "{} {} {} {} ({}): {} -> {}",
            event.decision_id,
            event.method,
            event.host,
            event.path,
            caller(event),
            logged(event),
            describe(&decision)
        );
    }
    println!(
        "replayed {replayed} decision(s): {} would change ({to_deny} allow -> deny, {to_allow} deny -> allow); {skipped} decided before the policy step or not replayable, {malformed} malformed line(s)",
        to_deny + to_allow
    );
    Ok(if to_deny + to_allow == 0 {
        exit::OK
    } else {
        exit::CHANGED
    })
}

/// The logged outcome in one line.
fn logged(event: &LoggedDecision) -> String {
    match (&event.permission, &event.reason) {
        (Some(p), _) if event.allowed() => format!("allow (permission {p})"),
        (_, Some(r)) => format!("deny {} {r}", event.status),
        _ if event.allowed() => "allow".to_owned(),
        _ => format!("deny {}", event.status),
    }
}

/// Who called, as the sidecar's own log says it: the subject and its credential kind; "not
/// identified" when a credential was presented and refused; "anonymous" only without one.
fn caller(event: &LoggedDecision) -> String {
    match (&event.principal, event.credential) {
        (Some(p), Some(c)) => format!("{p} by {}", c.as_str()),
        (Some(p), None) => p.clone(),
        (None, Some(c)) => format!(
            "not identified (a credential of kind {} was presented and refused)",
            c.as_str()
        ),
        (None, None) => "anonymous (no credential)".to_owned(),
    }
}

pub(super) async fn why_command(
    decision_id: &str,
    log: Option<&Path>,
    config: &Config,
) -> anyhow::Result<u8> {
    let configured = match app::decision_output(&config.log.decisions) {
        Some(DecisionOutput::File(path)) => Some(path),
        _ => None,
    };
    let Some(log) = log.map(Path::to_path_buf).or(configured) else {
        eprintln!(
            "error: no decision log to read: pass --log FILE (log.decisions.output is not a file)"
        );
        return Ok(exit::CONFIG);
    };
    let (events, _) = match read_log(&log) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::NOT_FOUND);
        }
    };
    let Some((_, event)) = events
        .into_iter()
        .find(|(_, e)| e.decision_id == decision_id)
    else {
        eprintln!(
            "error: no decision {decision_id:?} in {} (allows may be sampled out)",
            log.display()
        );
        return Ok(exit::NOT_FOUND);
    };
    println!(
        "decision {} at {}: {}",
        event.decision_id,
        event.time,
        logged(&event)
    );
    println!("request: {} {} {}", event.method, event.host, event.path);
    match &event.caller {
        Some(c) => println!(
            "caller: {}; its credential named roles [{}], permissions [{}]{}",
            caller(&event),
            c.roles.join(","),
            c.permissions.join(","),
            c.limit
                .as_ref()
                .map(|l| format!(", limited to [{}]", l.join(",")))
                .unwrap_or_default()
        ),
        None => println!("caller: {}", caller(&event)),
    }
    if let Some(version) = event.policy_version {
        println!("decided at policy version {version}");
    }
    if !event.replayable() {
        println!(
            "denied before the policy step ({}): the path, the credential or the request itself was refused, so no permission was tried; the sidecar's log line with decision_id={} has the cause",
            event.reason.as_deref().unwrap_or("unknown"),
            event.decision_id
        );
        return Ok(exit::OK);
    }
    let store = app::open_store(config).await?;
    let loaded = async {
        let snapshot = manage::load_snapshot(&store).await?;
        let (document, _) = store.load_policy().await?;
        anyhow::Ok((snapshot, document))
    }
    .await;
    store.close().await;
    let (snapshot, document) = loaded?;
    let decision = match event.redecide(&snapshot, jwt_subjects(config)) {
        Ok(d) => d,
        Err(why) => {
            println!("cannot decide it again: {why}");
            return Ok(exit::OK);
        }
    };
    println!(
        "decided again now (policy version {}): {}",
        snapshot.version(),
        describe(&decision)
    );
    let held = held(&decision, &snapshot);
    println!("permissions held now: [{}]", held.join(","));
    for name in &held {
        if let Some(p) = document.permissions.get(name) {
            let activities: Vec<String> = p.activities.iter().map(|a| a.to_string()).collect();
            println!("  {name}: {}", activities.join("; "));
        }
    }
    match &decision {
        Decision::Allow(a) => println!(
            "matched: {} grants {}",
            a.matched_permission, a.matched_activity
        ),
        Decision::Deny(d) => println!("none matched: {}", d.cause),
    }
    Ok(exit::OK)
}

/// The permissions a decision found the caller holding.
fn held(decision: &Decision, snapshot: &PolicySnapshot) -> Vec<String> {
    match decision {
        Decision::Allow(a) => a.permissions.iter().map(|p| p.to_string()).collect(),
        Decision::Deny(d) => match &d.cause {
            DenyCause::NoActivity { held } => held
                .ids()
                .map(|id| snapshot.permission_name(id).to_owned())
                .collect(),
            _ => Vec::new(),
        },
    }
}
