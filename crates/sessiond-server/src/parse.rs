//! Parsers of untrusted request input outside the JSON bodies, public so that the fuzz targets
//! (`fuzz/`) reach the code the server runs: the client address behind trusted proxies
//! (`X-Forwarded-For`) and SSE event ids (`Last-Event-ID`). The configuration loader is
//! [`Config::load_str`](crate::Config::load_str).

use std::net::{IpAddr, SocketAddr};

use crate::config::TrustedProxy;

/// The browser's address as far as this server can tell: the connection's peer, unless the peer
/// is a trusted proxy (`sessions.trusted_proxies`), in which case the right-most hop of the
/// `X-Forwarded-For` values (`forwarded_for`, one entry per header line, in order) that is not a
/// trusted proxy. `None` when that cannot be known (no peer, a trusted proxy that sent no usable
/// header, a hop that is not a bare address): with `bind_ip` a recorded IP then fails to match,
/// closed.
pub fn client_ip(
    trusted: &[TrustedProxy],
    peer: Option<SocketAddr>,
    forwarded_for: &[&str],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.contains(ip));
    let peer = peer?.ip().to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let ip = hop.parse::<IpAddr>().ok()?.to_canonical();
        if !is_trusted(ip) {
            return Some(ip);
        }
    }
    None
}

/// An SSE event id of `GET /v1/events`, `<boot>-<seq>` (docs/DESIGN.md §9.6): the boot number
/// of the node that sent it and the event's sequence number there. `None` for anything else
/// (surrounding whitespace is allowed, as `Last-Event-ID` values arrive).
pub fn event_id(text: &str) -> Option<(u64, u64)> {
    let (boot, seq) = text.trim().split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(boot) || !digits(seq) {
        return None;
    }
    Some((boot.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_two_decimal_numbers() {
        assert_eq!(event_id("17-42"), Some((17, 42)));
        assert_eq!(event_id(" 17-42 "), Some((17, 42)));
        assert_eq!(event_id("0-0"), Some((0, 0)));
        for bad in [
            "",
            "-",
            "17-",
            "-42",
            "17",
            "17-42-1",
            "+17-42",
            "17-+42",
            "a-1",
            "1-a",
            "18446744073709551616-1",
            "1-18446744073709551616",
            "١-٢",
        ] {
            assert_eq!(event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let single: TrustedProxy = "::ffff:10.0.0.1".parse().unwrap();
        assert!(single.contains(ip("10.0.0.1")));
        assert!(!single.contains(ip("10.0.0.2")));
        let range: TrustedProxy = "10.0.0.7/8".parse().unwrap();
        assert!(range.contains(ip("10.255.0.1")) && !range.contains(ip("11.0.0.1")));
        let v6: TrustedProxy = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "proxy.example", "", "10.0.0.1:80"] {
            assert!(bad.parse::<TrustedProxy>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_ip_believes_forwarded_for_only_from_trusted_proxies() {
        let proxy: TrustedProxy = "10.0.0.1".parse().unwrap();
        let inner: TrustedProxy = "10.0.0.2".parse().unwrap();
        let range: TrustedProxy = "10.1.0.0/16".parse().unwrap();
        let peer = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 40000));
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let (none, one, two, ranged): (
            [TrustedProxy; 0],
            [TrustedProxy; 1],
            [TrustedProxy; 2],
            [TrustedProxy; 1],
        ) = ([], [proxy], [proxy, inner], [range]);
        // (trusted proxies, peer, X-Forwarded-For headers, client IP)
        type Case<'a> = (
            &'a [TrustedProxy],
            Option<SocketAddr>,
            Vec<&'a str>,
            Option<IpAddr>,
        );
        let cases: Vec<Case<'_>> = vec![
            // No proxies configured: the peer, whatever the header says.
            (
                &none,
                peer("198.51.100.7"),
                vec!["203.0.113.9"],
                ip("198.51.100.7"),
            ),
            // A v4-mapped peer on a dual-stack socket is its IPv4 address.
            (
                &none,
                peer("::ffff:198.51.100.7"),
                vec![],
                ip("198.51.100.7"),
            ),
            // An untrusted peer's header is ignored.
            (
                &one,
                peer("198.51.100.7"),
                vec!["203.0.113.9"],
                ip("198.51.100.7"),
            ),
            // A trusted peer: the right-most hop that is not a trusted proxy.
            (
                &one,
                peer("10.0.0.1"),
                vec!["203.0.113.9"],
                ip("203.0.113.9"),
            ),
            (
                &two,
                peer("10.0.0.1"),
                vec!["1.2.3.4, 203.0.113.9, 10.0.0.2"],
                ip("203.0.113.9"),
            ),
            (
                &one,
                peer("10.0.0.1"),
                vec!["1.2.3.4", "203.0.113.9"],
                ip("203.0.113.9"),
            ),
            // A spoofed left-most entry does not win over what the proxy appended.
            (
                &one,
                peer("10.0.0.1"),
                vec!["6.6.6.6, 203.0.113.9"],
                ip("203.0.113.9"),
            ),
            // Unknown: no header, only proxies, or a hop that is not a bare address.
            (&one, peer("10.0.0.1"), vec![], None),
            (&one, peer("10.0.0.1"), vec!["10.0.0.1"], None),
            (&one, peer("10.0.0.1"), vec!["203.0.113.9:5000"], None),
            (&one, None, vec!["203.0.113.9"], None),
            // A CIDR range: every address in it is a proxy, the first one outside is the client.
            (
                &ranged,
                peer("10.1.2.3"),
                vec!["203.0.113.9, 10.1.0.7"],
                ip("203.0.113.9"),
            ),
            (
                &ranged,
                peer("10.2.0.1"),
                vec!["203.0.113.9"],
                ip("10.2.0.1"),
            ),
        ];
        for (trusted, peer, xff, want) in cases {
            assert_eq!(
                client_ip(trusted, peer, &xff),
                want,
                "{trusted:?} {peer:?} {xff:?}"
            );
        }
    }
}
