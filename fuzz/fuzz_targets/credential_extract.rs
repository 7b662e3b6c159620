//! Credential extraction from raw header pairs: never panics, and never picks one of two
//! credentials. Whatever it returns was present, once, in the headers.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portcullis::identity::credential::{extract, Presented, Source};

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(Name, String)>,
    cookie_name: Option<String>,
}

/// Mostly the names that matter, in any case, sometimes anything.
#[derive(Debug, Arbitrary)]
enum Name {
    Authorization(bool),
    Cookie(bool),
    ApiToken(bool),
    Other(String),
}

impl Name {
    fn as_string(&self) -> String {
        let (name, upper) = match self {
            Name::Authorization(u) => ("authorization", *u),
            Name::Cookie(u) => ("cookie", *u),
            Name::ApiToken(u) => ("x-api-token", *u),
            Name::Other(s) => return s.clone(),
        };
        if upper {
            name.to_ascii_uppercase()
        } else {
            name.to_owned()
        }
    }
}

fuzz_target!(|input: Input| {
    let cookie_name = input.cookie_name.as_deref().unwrap_or("jwt-token");
    if cookie_name.is_empty() || cookie_name.contains([';', ',', '=', ' ']) {
        return;
    }
    let headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.as_string(), v.clone()))
        .collect();
    let pairs = headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let result = extract(pairs, cookie_name, "x-api-token");
    let count = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .count()
    };
    if count("authorization") > 1 || count("x-api-token") > 1 {
        assert!(
            result.is_err(),
            "two of a credential header: {headers:?} -> {result:?}"
        );
    }
    match result {
        Ok(Presented::Nothing) => {
            assert_eq!(count("authorization"), 0, "{headers:?}");
            assert_eq!(count("x-api-token"), 0, "{headers:?}");
        }
        Ok(Presented::Jwt { token, source }) | Ok(Presented::ApiToken { token, source }) => {
            assert!(!token.is_empty());
            assert!(
                !token.contains([',', ';', ' ', '"']),
                "{headers:?} -> {token:?}"
            );
            let from = match source {
                Source::Header => "authorization",
                Source::Cookie => "cookie",
                Source::TokenHeader => "x-api-token",
            };
            assert!(
                headers
                    .iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case(from) && v.contains(token)),
                "{headers:?} -> {token:?} from {from}"
            );
        }
        Err(_) => {}
    }
});
