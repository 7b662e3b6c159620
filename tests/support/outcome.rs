//! What a front did with one request, for the differential tests that send the same request
//! through two fronts or modes and compare (`tests/wasm_differential.rs`,
//! `tests/e2e_http_authz.rs`): the status, the headers the gate adds to the answer, the deny
//! body and every request the upstream received, with what differs by nature (ids) taken out.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;

use crate::recording::RecordingUpstream;
use crate::wire::WireResponse;

/// One request as the upstream received it: method, target, headers (lower-case names).
pub type Forwarded = (String, String, Vec<(String, String)>);

/// What one front did with one request, with what differs by nature (ids) taken out.
#[derive(Debug, PartialEq, Clone)]
pub struct Outcome {
    pub status: u16,
    /// The headers the gate adds to the client's answer.
    pub answer_headers: Vec<(String, String)>,
    /// The deny body (JSON without its decision id), or the raw body.
    pub body: String,
    pub upstream: Vec<Forwarded>,
}

/// Client-answer headers the decision sets (the decision id's value aside).
pub const ANSWER_HEADERS: [&str; 5] = [
    "content-type",
    "www-authenticate",
    "location",
    "set-cookie",
    "x-auth-decision-id",
];
/// Values random per request (their presence is still compared).
pub const RANDOM_VALUES: [&str; 2] = ["x-auth-decision-id", "x-request-id"];

pub fn outcome(response: &WireResponse, upstream: &RecordingUpstream) -> Outcome {
    let body = match serde_json::from_str::<Value>(&response.body) {
        Ok(Value::Object(mut map)) => {
            map.remove("decision_id");
            Value::Object(map).to_string()
        }
        _ => response.body.clone(),
    };
    let masked = |k: &str, v: &str| {
        let k = k.to_ascii_lowercase();
        let v = if RANDOM_VALUES.contains(&k.as_str()) {
            "<random>".to_owned()
        } else {
            v.to_owned()
        };
        (k, v)
    };
    // A bodiless answer (HEAD) has no content type to compare: Envoy's `http_service` drops it.
    let answer_headers = response
        .headers
        .iter()
        .filter(|(k, _)| ANSWER_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)))
        .filter(|(k, _)| !(body.is_empty() && k.eq_ignore_ascii_case("content-type")))
        .map(|(k, v)| masked(k, v))
        .collect();
    let upstream = upstream
        .take()
        .into_iter()
        .map(|r| {
            // In name order (stable: one name's values keep theirs): where a proxy puts a
            // header it overwrote is not the gate's doing.
            let mut headers: Vec<(String, String)> =
                r.headers.iter().map(|(k, v)| masked(k, v)).collect();
            headers.sort_by(|a, b| a.0.cmp(&b.0));
            (r.method, r.target, headers)
        })
        .collect();
    Outcome {
        status: response.status,
        answer_headers,
        body,
        upstream,
    }
}
