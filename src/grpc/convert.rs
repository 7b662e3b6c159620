//! Conversions between Envoy's protobuf messages and the domain types. The only place that
//! knows the shape of `CheckRequest` and `CheckResponse`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::authz::answer::{self, identity_facts, DECISION_ID_HEADER, IDENTITY_HEADER_PREFIX};
use crate::authz::{AccessRequest, Allow, Decision, Deny, DenyStatus, Reason};
use crate::browser::Stripping;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use envoy_types::pb::google::rpc;

/// Borrows what the decision needs from a `CheckRequest`. Raw headers (`encode_raw_headers`)
/// are preferred: they keep repeated headers apart.
pub fn access_request(request: &CheckRequest) -> AccessRequest<'_> {
    let Some(http) = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
    else {
        return AccessRequest::default();
    };
    let mut not_utf8 = None;
    let headers: Vec<(&str, Cow<'_, str>)> = match &http.header_map {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_str()
                } else {
                    // Never decoded lossily: a value that is not UTF-8 is refused as such.
                    std::str::from_utf8(&h.raw_value).unwrap_or_else(|_| {
                        not_utf8.get_or_insert(h.key.as_str());
                        ""
                    })
                };
                (h.key.as_str(), Cow::Borrowed(value))
            })
            .collect(),
        _ => http
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
            .collect(),
    };
    // Empty for CONNECT and other requests without `:path`: canonicalization refuses it.
    AccessRequest {
        method: http.method.as_str(),
        scheme: http.scheme.as_str(),
        host: http.host.as_str(),
        path: http.path.as_str(),
        headers,
        not_utf8,
    }
}

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn list_value<S: AsRef<str>>(items: &[S]) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue {
            values: items.iter().map(|s| string_value(s.as_ref())).collect(),
        })),
    }
}

/// The dynamic-metadata key of an identity header: `x-auth-user-id` is `user_id`.
fn metadata_key(header: &str) -> String {
    header
        .trim_start_matches(IDENTITY_HEADER_PREFIX)
        .replace('-', "_")
}

/// The part of an allow that depends only on who the caller is in one snapshot: the identity
/// headers, and the same facts as dynamic metadata (with roles and permissions as lists). With
/// the names of the headers it sets, which the request part must not remove.
///
/// An allow is answered as this part's encoding followed by [`request_part`]'s: protobuf
/// merges a message encoded twice (repeated fields append, map entries and scalars of the
/// second win), so the two read as one `CheckResponse`. The server encodes this part once per
/// caller and snapshot and reuses the bytes.
pub fn identity_part(allow: &Allow) -> (CheckResponse, Vec<&'static str>) {
    let facts = identity_facts(allow);
    let names = facts.iter().map(|(name, _)| *name).collect();
    let mut fields = HashMap::with_capacity(facts.len() + 4);
    for (name, value) in &facts {
        fields.insert(metadata_key(name), string_value(value));
    }
    fields.insert("permissions".to_owned(), list_value(&allow.permissions));
    if let Some(p) = &allow.principal {
        fields.insert("roles".to_owned(), list_value(&allow.roles));
        if let Some(email) = p.email() {
            fields.insert("email".to_owned(), string_value(email));
        }
        if let Some(name) = p.name() {
            fields.insert("name".to_owned(), string_value(name));
        }
    }
    let response = CheckResponse {
        dynamic_metadata: Some(Struct { fields }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: facts.into_iter().map(|(k, v)| header(k, v)).collect(),
            ..Default::default()
        })),
        ..Default::default()
    };
    (response, names)
}

/// What an allow changes per request besides the identity: the caller's credential taken out
/// (`forward_credential`), and a renewed cookie for the browser.
#[derive(Debug, Default, Clone)]
pub struct PerRequest {
    pub stripping: Stripping,
    /// A `Set-Cookie` value for the response to the browser (a renewed JWT cookie).
    pub set_cookie: Option<String>,
}

/// The part of an allow that differs per request: the status, the decision id, what matched,
/// the policy version, the client's own `x-auth-*` headers to remove (every one the identity
/// part does not overwrite, whose `names` it gave), the credential taken out and a renewed
/// cookie (`extra`).
pub fn request_part(
    allow: &Allow,
    request: &AccessRequest<'_>,
    decision_id: &str,
    names: &[&str],
    extra: &PerRequest,
) -> CheckResponse {
    let headers_to_remove = answer::headers_to_remove(request, names, &extra.stripping);
    let mut headers = vec![header(DECISION_ID_HEADER, decision_id.to_owned())];
    if let Some(cookie) = &extra.stripping.cookie {
        headers.push(header("cookie", cookie.clone()));
    }
    let response_headers_to_add = extra
        .set_cookie
        .iter()
        .map(|c| HeaderValueOption {
            header: Some(HeaderValue {
                key: "set-cookie".to_owned(),
                value: c.clone(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();

    let fields = HashMap::from([
        (metadata_key(DECISION_ID_HEADER), string_value(decision_id)),
        (
            "matched_permission".to_owned(),
            string_value(&allow.matched_permission),
        ),
        (
            "policy_version".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(allow.policy_version as f64)),
            },
        ),
    ]);
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Ok as i32,
            ..Default::default()
        }),
        dynamic_metadata: Some(Struct { fields }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers,
            headers_to_remove,
            response_headers_to_add,
            ..Default::default()
        })),
    }
}

/// Converts a decision into Envoy's answer, as one message (the CLI, tests). The server sends
/// the same answer in two encoded parts: see [`identity_part`].
pub fn check_response(
    decision: &Decision,
    request: &AccessRequest<'_>,
    decision_id: &str,
) -> CheckResponse {
    check_response_with(decision, request, decision_id, &PerRequest::default())
}

/// [`check_response`] with an allow's per-request changes (`extra`), as one message.
pub fn check_response_with(
    decision: &Decision,
    request: &AccessRequest<'_>,
    decision_id: &str,
    extra: &PerRequest,
) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => {
            let (mut response, names) = identity_part(allow);
            let rest = request_part(allow, request, decision_id, &names, extra);
            merge_parts(&mut response, rest);
            response
        }
        Decision::Deny(deny) => deny_response(deny, decision_id),
    }
}

/// What decoding the two parts' encodings one after the other gives, built in place.
fn merge_parts(response: &mut CheckResponse, rest: CheckResponse) {
    response.status = rest.status;
    if let (Some(meta), Some(more)) = (&mut response.dynamic_metadata, rest.dynamic_metadata) {
        meta.fields.extend(more.fields);
    }
    if let (Some(HttpResponse::OkResponse(ok)), Some(HttpResponse::OkResponse(more))) =
        (&mut response.http_response, rest.http_response)
    {
        ok.headers.extend(more.headers);
        ok.headers_to_remove.extend(more.headers_to_remove);
        ok.response_headers_to_add
            .extend(more.response_headers_to_add);
    }
}

/// A denied browser navigation, sent to the login page instead of a 401: `302` to `location`
/// (built from an allow-listed host only), never cached.
pub fn login_redirect_response(location: &str, decision_id: &str) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Unauthenticated as i32,
            message: Reason::MissingCredential.code().to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(Struct {
            fields: [
                ("decision_id".to_owned(), string_value(decision_id)),
                ("reason".to_owned(), string_value("login_required")),
            ]
            .into_iter()
            .collect(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 302 }),
            headers: vec![
                header("location", location.to_owned()),
                header("cache-control", "no-store".to_owned()),
                header("x-auth-decision-id", decision_id.to_owned()),
            ],
            body: String::new(),
        })),
    }
}

fn deny_response(deny: &Deny, decision_id: &str) -> CheckResponse {
    let status = deny.reason.status();
    let grpc_code = match status {
        DenyStatus::BadRequest => tonic::Code::InvalidArgument,
        DenyStatus::Unauthenticated => tonic::Code::Unauthenticated,
        DenyStatus::Forbidden => tonic::Code::PermissionDenied,
        DenyStatus::Unavailable => tonic::Code::Unavailable,
    };
    let (code, deny_headers, body) = answer::deny_answer(deny, decision_id);
    let headers = deny_headers
        .into_iter()
        .map(|(k, v)| header(k, v))
        .collect();
    let mut fields = BTreeMap::new();
    fields.insert("decision_id".to_owned(), string_value(decision_id));
    fields.insert("reason".to_owned(), string_value(deny.reason.code()));
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code as i32,
            message: deny.reason.code().to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(code),
            }),
            headers,
            body,
        })),
    }
}
