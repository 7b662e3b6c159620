//! Conversions between Envoy's protobuf messages and the check service's types: a
//! `CheckRequest` to an `AccessRequest`, a [`Verdict`] to a `CheckResponse`. The only place
//! that knows the shape of `CheckRequest` and `CheckResponse`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use prost::Message;

use super::Answer;
use crate::authz::answer::{DECISION_ID_HEADER, IDENTITY_HEADER_PREFIX};
use crate::authz::{AccessRequest, DenyStatus, Reason};
use crate::check::{Allowed, Denied, Identity, LoginRedirect, Verdict, REDIRECT_STATUS};
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
    owned_value(s.to_owned())
}

fn owned_value(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
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
/// headers, and the same facts as dynamic metadata (with roles and permissions as lists).
///
/// An allow is answered as this part's encoding followed by [`request_part`]'s: protobuf
/// merges a message encoded twice (repeated fields append, map entries and scalars of the
/// second win), so the two read as one `CheckResponse`. The server encodes this part once per
/// caller and snapshot ([`Identity::encoded`]) and reuses the bytes.
pub fn identity_part(identity: &Identity) -> CheckResponse {
    let mut fields = HashMap::with_capacity(identity.headers.len() + 4);
    for (name, value) in &identity.headers {
        fields.insert(metadata_key(name), string_value(value));
    }
    fields.insert("permissions".to_owned(), list_value(&identity.permissions));
    if let Some(p) = &identity.principal {
        fields.insert("roles".to_owned(), list_value(&identity.roles));
        if let Some(email) = p.email() {
            fields.insert("email".to_owned(), string_value(email));
        }
        if let Some(name) = p.name() {
            fields.insert("name".to_owned(), string_value(name));
        }
    }
    CheckResponse {
        dynamic_metadata: Some(Struct { fields }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: identity
                .headers
                .iter()
                .map(|(k, v)| header(k, v.clone()))
                .collect(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The part of an allow that differs per request: the status, the decision id, what matched,
/// the policy version, the client's headers to remove, the cleaned cookie and a renewed
/// cookie for the client. Takes `allowed` whole: its strings move into the message.
pub fn request_part(allowed: Allowed) -> CheckResponse {
    let headers = allowed
        .request_headers()
        .map(|(k, v)| header(k, v.to_owned()))
        .collect();
    let response_headers_to_add = allowed
        .set_cookie
        .into_iter()
        .map(|c| HeaderValueOption {
            header: Some(HeaderValue {
                key: "set-cookie".to_owned(),
                value: c,
                ..Default::default()
            }),
            append_action: HeaderAppendAction::AppendIfExistsOrAdd as i32,
            ..Default::default()
        })
        .collect();

    let fields = HashMap::from([
        (
            metadata_key(DECISION_ID_HEADER),
            owned_value(allowed.decision_id),
        ),
        (
            "matched_permission".to_owned(),
            owned_value(allowed.matched_permission),
        ),
        (
            "policy_version".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(allowed.policy_version as f64)),
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
            headers_to_remove: allowed.headers_to_remove,
            response_headers_to_add,
            ..Default::default()
        })),
    }
}

/// A verdict as the server sends it: an allow's identity part as the bytes encoded once for
/// its caller and snapshot, then the rest.
pub fn answer(verdict: Verdict) -> Answer {
    match verdict {
        Verdict::Allow(allowed) => Answer {
            encoded: allowed
                .identity
                .encoded(|identity| identity_part(identity).encode_to_vec()),
            rest: request_part(allowed),
        },
        Verdict::Deny(denied) => deny_response(denied).into(),
        Verdict::LoginRedirect(redirect) => login_redirect_response(&redirect).into(),
    }
}

/// A verdict as one message (tests): what the client decodes from [`answer`]'s two parts.
pub fn check_response(verdict: Verdict) -> CheckResponse {
    match verdict {
        Verdict::Allow(allowed) => {
            let mut response = identity_part(&allowed.identity);
            merge_parts(&mut response, request_part(allowed));
            response
        }
        Verdict::Deny(denied) => deny_response(denied),
        Verdict::LoginRedirect(redirect) => login_redirect_response(&redirect),
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

/// A denied browser navigation, sent to the login page instead of a 401: a `302`, never
/// cached.
fn login_redirect_response(redirect: &LoginRedirect) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::Unauthenticated as i32,
            message: Reason::MissingCredential.code().to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(Struct {
            fields: [
                (
                    "decision_id".to_owned(),
                    string_value(&redirect.decision_id),
                ),
                ("reason".to_owned(), string_value("login_required")),
            ]
            .into_iter()
            .collect(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(REDIRECT_STATUS),
            }),
            headers: redirect
                .headers()
                .into_iter()
                .map(|(k, v)| header(k, v.to_owned()))
                .collect(),
            body: String::new(),
        })),
    }
}

fn deny_response(denied: Denied) -> CheckResponse {
    let grpc_code = match denied.reason.status() {
        DenyStatus::BadRequest => tonic::Code::InvalidArgument,
        DenyStatus::Unauthenticated => tonic::Code::Unauthenticated,
        DenyStatus::Forbidden => tonic::Code::PermissionDenied,
        DenyStatus::Unavailable => tonic::Code::Unavailable,
    };
    let headers = denied
        .headers
        .into_iter()
        .map(|(k, v)| header(k, v))
        .collect();
    let mut fields = BTreeMap::new();
    fields.insert("decision_id".to_owned(), owned_value(denied.decision_id));
    fields.insert("reason".to_owned(), string_value(denied.reason.code()));
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc_code as i32,
            message: denied.reason.code().to_owned(),
            ..Default::default()
        }),
        dynamic_metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(denied.status),
            }),
            headers,
            body: denied.body,
        })),
    }
}
