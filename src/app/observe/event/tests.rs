use super::*;

fn full() -> DecisionEvent {
    DecisionEvent {
        v: SCHEMA_VERSION,
        decision_id: "0193a1b2-0000-7000-8000-000000000001".to_owned(),
        time: "2026-12-07T21:00:00.000Z".to_owned(),
        method: "GET".to_owned(),
        host: "app.example.com".to_owned(),
        path: "/api/v1/roles".to_owned(),
        outcome: Outcome::Allow,
        status: 200,
        reason: None,
        permission: Some("roles:read".to_owned()),
        principal: Some("sa:reporting-bot".to_owned()),
        credential: Some(CredentialKind::ApiToken),
        caller: Some(LoggedCaller {
            roles: vec!["viewer".to_owned()],
            permissions: Vec::new(),
            token_id: Some("tok_0123456789abcdef".to_owned()),
            limit: Some(vec!["roles:read".to_owned()]),
        }),
        policy_version: Some(9),
        latency_us: 42,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        shadow: Some(ShadowDecision {
            outcome: Outcome::Deny,
            status: 403,
            reason: Some("no_matching_activity".to_owned()),
            permission: None,
            policy_version: Some(9),
        }),
    }
}

#[test]
fn every_line_reads_back_as_written() {
    let lines = [
        LogLine::Decision(Box::new(full())),
        LogLine::Decision(Box::new(DecisionEvent {
            outcome: Outcome::Deny,
            status: 401,
            reason: Some("invalid_token".to_owned()),
            permission: None,
            principal: None,
            credential: Some(CredentialKind::Unreadable),
            caller: None,
            traceparent: None,
            shadow: None,
            ..full()
        })),
        LogLine::DecisionsDropped(DroppedEvent {
            v: SCHEMA_VERSION,
            time: "2026-12-07T21:00:01.000Z".to_owned(),
            count: 3,
            total: 7,
        }),
    ];
    for line in lines {
        let json = line.to_json();
        assert_eq!(parse_line(&json).expect(&json), line, "{json}");
    }
}

#[test]
fn a_line_of_another_schema_or_with_an_unknown_field_is_refused() {
    let json = LogLine::Decision(Box::new(full())).to_json();
    let newer = json.replacen("\"v\":1", "\"v\":2", 1);
    assert!(
        matches!(parse_line(&newer), Err(EventError::UnknownVersion(2))),
        "{newer}"
    );
    let unversioned = json.replacen("\"v\":1,", "", 1);
    assert!(matches!(
        parse_line(&unversioned),
        Err(EventError::UnknownVersion(0))
    ));
    let extra = json.replacen("\"v\":1", "\"v\":1,\"surprise\":true", 1);
    assert!(matches!(parse_line(&extra), Err(EventError::Malformed(_))));
    let no_kind = json.replacen("\"credential\":\"api-token\"", "\"credential\":\"x\"", 1);
    assert!(matches!(
        parse_line(&no_kind),
        Err(EventError::Malformed(_))
    ));
}

/// The README's "Decision logs" section names every field an event can carry, in its
/// field table, and no field the schema does not have.
#[test]
fn the_readme_documents_every_field_of_the_schema() {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("| event field |")
        .expect("a field table in the README");
    // The backticked names in each row's first column.
    let table: Vec<&str> = readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    let mut fields: Vec<String> = Vec::new();
    let mut collect = |value: serde_json::Value, prefix: &str| {
        if let serde_json::Value::Object(map) = value {
            for key in map.keys() {
                fields.push(format!("{prefix}{key}"));
            }
        }
    };
    let decision = serde_json::to_value(LogLine::Decision(Box::new(full()))).unwrap_or_default();
    collect(decision.clone(), "");
    collect(decision["caller"].clone(), "caller.");
    collect(decision["shadow"].clone(), "shadow.");
    let dropped = LogLine::DecisionsDropped(DroppedEvent {
        v: 1,
        time: String::new(),
        count: 0,
        total: 0,
    });
    collect(serde_json::to_value(dropped).unwrap_or_default(), "");
    fields.sort();
    fields.dedup();
    let mut documented: Vec<String> = table.iter().map(|s| (*s).to_owned()).collect();
    documented.sort();
    documented.dedup();
    assert_eq!(documented, fields);
}
