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
    use super::event_id;

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
}
