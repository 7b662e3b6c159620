//! Path canonicalization: never panics; an accepted path holds no refused construct, is
//! idempotent once written back as a target, and ignores the query. Host normalization never
//! panics and only ever lower-cases and shortens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::path::normalize_host;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    portcullis_fuzz::check_path(text);
    let host = normalize_host(text);
    assert!(host.len() <= text.len(), "{text:?} -> {host:?}");
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "{text:?} -> {host:?}"
    );
});
