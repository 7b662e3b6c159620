//! Policy-file parsing: never panics; a file that parses round-trips through `to_yaml`, and
//! compiling it (within the regex size limits) never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::validate::lint;
use portcullis::policy::{PolicyDocument, PolicySnapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = PolicyDocument::from_yaml("fuzz", text) else {
        return;
    };
    let _ = lint(&doc);
    let yaml = doc.to_yaml().expect("a parsed policy can be written");
    let again = PolicyDocument::from_yaml("round trip", &yaml)
        .unwrap_or_else(|e| panic!("written policy does not parse: {e}\n{yaml}"));
    assert_eq!(doc, again, "round trip changed the policy:\n{yaml}");
    if let Ok(snapshot) = PolicySnapshot::compile(&doc, 1) {
        let grants = snapshot.grants(true, doc.permissions.keys().map(String::as_str), []);
        for method in ["GET", "PUT", "BREW"] {
            let _ = snapshot.evaluate(method, "app.example.com", "/api/v1/roles", &grants);
        }
    }
});
