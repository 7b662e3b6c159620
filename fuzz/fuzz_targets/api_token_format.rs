//! The API-token format check: never panics, and accepts only `pcs_` + 49 base62 characters
//! whose last six are the checksum of the rest (so one changed character is always refused).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::api_token::{check_format, has_prefix, TOKEN_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if check_format(token).is_ok() {
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(has_prefix(token));
        assert!(
            token[4..].bytes().all(|b| b.is_ascii_alphanumeric()),
            "{token}"
        );
        // Any one character changed within the alphabet breaks the checksum.
        let bytes = token.as_bytes();
        for i in 4..bytes.len() {
            let mut changed = bytes.to_vec();
            changed[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(changed).expect("ascii");
            assert!(check_format(&changed).is_err(), "{token} -> {changed}");
        }
    }
    // A generated token always passes; the fuzzer's bytes never panic the check.
    let _ = check_format(&format!("pcs_{token}"));
});
