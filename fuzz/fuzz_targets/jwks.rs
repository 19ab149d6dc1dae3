//! A trusted issuer's JWK Set document: any input is a refused set or an issuer with pinned
//! keys, never a panic; every pinned key verifies (or refuses) an arbitrary token without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond::jose::foreign::TrustedIssuer;
use sessiond::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(issuer) = TrustedIssuer::from_jwks_json("https://idp.example", "sessiond", text) {
        for key in issuer.keys() {
            let _ = (key.kid(), key.algorithm());
        }
        let token = "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIn0.AAAA";
        let _ = issuer.verify(token, Timestamp::from_unix_millis(0));
    }
});
