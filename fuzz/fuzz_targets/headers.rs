//! The parsers of untrusted header values: `X-Forwarded-For` behind trusted proxies and SSE
//! `Last-Event-ID`. Never a panic; a client address is either the peer or one of the hops the
//! request carried, never invented; an event id re-formats to what parsed.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use sessiond_server::config::TrustedProxy;
use sessiond_server::parse::{client_ip, event_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((boot, seq)) = event_id(text) {
        assert_eq!(event_id(&format!("{boot}-{seq}")), Some((boot, seq)));
    }
    // Header lines are separated by '\n'; the peer is a trusted proxy in 10.0.0.0/8.
    let trusted: Vec<TrustedProxy> = ["10.0.0.0/8", "fd00::/8"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let lines: Vec<&str> = text.split('\n').collect();
    let peer = SocketAddr::from(([10, 0, 0, 1], 40000));
    if let Some(ip) = client_ip(&trusted, Some(peer), &lines) {
        let carried = lines
            .iter()
            .flat_map(|l| l.split(','))
            .filter_map(|h| h.trim().parse::<IpAddr>().ok())
            .any(|h| h.to_canonical() == ip);
        assert!(carried, "a client address the request did not carry");
        assert!(!trusted.iter().any(|t| t.contains(ip)));
    }
    // An untrusted peer is itself, whatever the headers say.
    let outsider = SocketAddr::from(([192, 0, 2, 1], 1));
    assert_eq!(
        client_ip(&trusted, Some(outsider), &lines),
        Some(outsider.ip())
    );
});
