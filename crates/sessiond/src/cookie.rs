//! The session cookie, wire format version 1 (docs/DESIGN.md §3.1).
//!
//! ```text
//! v1.<session_id>.<key_id>.<mac>
//! mac = base64url-no-pad(HMAC-SHA256(key, len(session_id) ":" session_id ":" len(key_id) ":" key_id))
//! ```
//!
//! The decimal length prefixes make the MAC input unambiguous: without them `<a,bc>` and
//! `<ab,c>` would be the same bytes. Parsing is strict and has no fallback: exactly four
//! segments, `v1` only, canonical ids, a MAC that is base64url of exactly 32 bytes, compared in
//! constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Timestamp;
use crate::id::{KeyId, SessionId};
use crate::keys::Key;
use crate::secret::Secret;

/// The only accepted version prefix.
pub const VERSION: &str = "v1";
/// The MAC length in bytes (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// No well-formed v1 cookie is longer than this; longer input is refused before any decoding.
pub const MAX_LEN: usize = 128;

/// Why a cookie value was refused. Every variant is an `invalid_credential` to the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// The value is empty.
    #[error("cookie value is empty")]
    Empty,
    /// The value is longer than any v1 cookie.
    #[error("cookie value is too long")]
    TooLong,
    /// The value does not have exactly four `.`-separated segments.
    #[error("cookie value has {found} segments, expected 4")]
    SegmentCount {
        /// How many segments there were.
        found: usize,
    },
    /// The version segment is not `v1`.
    #[error("unsupported cookie version")]
    UnsupportedVersion,
    /// The session id segment is not a canonical session id.
    #[error("malformed session id in cookie")]
    MalformedSessionId,
    /// The key id segment is not a canonical key id.
    #[error("malformed key id in cookie")]
    MalformedKeyId,
    /// The MAC segment is not base64url without padding.
    #[error("cookie MAC is not base64url")]
    MalformedMac,
    /// The MAC does not decode to exactly 32 bytes.
    #[error("cookie MAC is {found} bytes, expected 32")]
    MacLength {
        /// The decoded length.
        found: usize,
    },
    /// The MAC does not verify under the named key.
    #[error("cookie MAC does not verify")]
    BadMac,
    /// The key that verified the MAC is not for cookies (defence in depth; the key ring already
    /// refuses keys of another purpose).
    #[error("cookie key cannot compute MACs")]
    KeyNotHmac,
}

/// A cookie value that parsed; its MAC is not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCookie {
    session_id: SessionId,
    key_id: KeyId,
    mac: [u8; MAC_LEN],
}

impl ParsedCookie {
    /// The session the cookie points at (unverified until [`ParsedCookie::verify`]).
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// The key the cookie claims to be signed with.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Checks the MAC against `key` in constant time.
    ///
    /// # Errors
    /// [`CookieError::BadMac`] when it does not verify, [`CookieError::KeyNotHmac`] for a key
    /// without HMAC material.
    pub fn verify(&self, key: &Key) -> Result<(), CookieError> {
        let mac = key.hmac().ok_or(CookieError::KeyNotHmac)?.clone();
        let mac = feed(mac, self.session_id.as_str(), self.key_id.as_str());
        // `verify_slice` compares in constant time (subtle).
        mac.verify_slice(&self.mac).map_err(|_| CookieError::BadMac)
    }
}

/// The exact bytes the MAC covers: `len(session_id) ":" session_id ":" len(key_id) ":" key_id`.
pub fn mac_input(session_id: &str, key_id: &str) -> Vec<u8> {
    format!(
        "{}:{}:{}:{}",
        session_id.len(),
        session_id,
        key_id.len(),
        key_id
    )
    .into_bytes()
}

/// Feeds the MAC input into `mac` piece by piece (no allocation), byte-identical to
/// [`mac_input`].
fn feed(mut mac: Hmac<Sha256>, session_id: &str, key_id: &str) -> Hmac<Sha256> {
    let mut digits = itoa::Buffer::new();
    mac.update(digits.format(session_id.len()).as_bytes());
    mac.update(b":");
    mac.update(session_id.as_bytes());
    mac.update(b":");
    mac.update(digits.format(key_id.len()).as_bytes());
    mac.update(b":");
    mac.update(key_id.as_bytes());
    mac
}

/// HMAC-SHA256 of the MAC input for raw segments, as the cookie would carry it.
///
/// # Errors
/// [`CookieError::KeyNotHmac`] for a key without HMAC material.
pub fn compute_mac(
    key: &Key,
    session_id: &str,
    key_id: &str,
) -> Result<[u8; MAC_LEN], CookieError> {
    let mac = key.hmac().ok_or(CookieError::KeyNotHmac)?.clone();
    Ok(feed(mac, session_id, key_id).finalize().into_bytes().into())
}

/// Builds the cookie value for `session_id` signed by `key`.
///
/// # Errors
/// [`CookieError::KeyNotHmac`] for a key without HMAC material.
pub fn encode(session_id: &SessionId, key: &Key) -> Result<Secret<String>, CookieError> {
    let mac = compute_mac(key, session_id.as_str(), key.id().as_str())?;
    let mut out = String::with_capacity(100);
    out.push_str(VERSION);
    out.push('.');
    out.push_str(session_id.as_str());
    out.push('.');
    out.push_str(key.id().as_str());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(mac, &mut out);
    Ok(Secret::new(out))
}

/// Parses a cookie value. Does not verify the MAC.
///
/// # Errors
/// A [`CookieError`] naming the first thing wrong, checked in wire order.
pub fn parse(value: &str) -> Result<ParsedCookie, CookieError> {
    if value.is_empty() {
        return Err(CookieError::Empty);
    }
    if value.len() > MAX_LEN {
        return Err(CookieError::TooLong);
    }
    let mut parts = value.split('.');
    let (Some(version), Some(sid), Some(kid), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(CookieError::SegmentCount {
            found: value.split('.').count(),
        });
    };
    if version != VERSION {
        return Err(CookieError::UnsupportedVersion);
    }
    let session_id = SessionId::parse(sid).map_err(|_| CookieError::MalformedSessionId)?;
    let key_id = KeyId::parse(kid).map_err(|_| CookieError::MalformedKeyId)?;
    let decoded = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| CookieError::MalformedMac)?;
    let mac: [u8; MAC_LEN] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| CookieError::MacLength {
            found: decoded.len(),
        })?;
    Ok(ParsedCookie {
        session_id,
        key_id,
        mac,
    })
}

/// `SameSite` of the session and CSRF cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (default).
    Lax,
    /// Never sent from other sites.
    Strict,
    /// Always sent; requires `Secure`.
    None,
}

/// The browser cookies' names and attributes (docs/DESIGN.md §9.5), and their `Set-Cookie`
/// values: the session cookie (`HttpOnly`), the JavaScript-readable CSRF cookie and the refresh
/// cookie of browser sessions (`HttpOnly`, always `SameSite=Strict`). Every cookie has
/// `Path=/` and no `Domain`; with `secure` they are `Secure` and named with the `__Host-`
/// prefix, so no sibling subdomain can set or overwrite them.
///
/// ```
/// use sessiond::cookie::{CookieSettings, SameSite};
/// use sessiond::Timestamp;
///
/// let cookies = CookieSettings::new(true, SameSite::Lax);
/// assert_eq!(cookies.session, "__Host-sessiond");
/// let now = Timestamp::from_unix_seconds(1_000);
/// let set = cookies.session_cookie("v1.a.b.c", now, Timestamp::from_unix_seconds(4_600));
/// assert!(set.starts_with("__Host-sessiond=v1.a.b.c;") && set.contains("Max-Age=3600"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieSettings {
    /// `Secure` and the `__Host-` prefix.
    pub secure: bool,
    /// `SameSite` of the session and CSRF cookies.
    pub same_site: SameSite,
    /// The session cookie's name.
    pub session: String,
    /// The refresh cookie's name.
    pub refresh: String,
    /// The CSRF cookie's name.
    pub csrf: String,
}

/// The base name of a deployment's cookies (default `sessiond`): 1 to 64 characters of
/// `[A-Za-z0-9_-]`, not starting with `__` (the `__Host-` prefix is added, never written), so
/// that two deployments on one host can keep their cookies apart.
///
/// ```
/// use sessiond::cookie::{CookieName, CookieSettings, SameSite};
///
/// let name = CookieName::parse("shop-auth").unwrap();
/// let cookies = CookieSettings::named(&name, true, SameSite::Lax);
/// assert_eq!(cookies.refresh, "__Host-shop-auth-refresh");
/// assert!(CookieName::parse("__Host-x").is_err());
/// assert!(CookieName::parse("a;b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName(String);

/// A cookie base name outside the rules of [`CookieName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cookie name is 1 to 64 characters of [A-Za-z0-9_-], not starting with \"__\"")]
pub struct InvalidCookieName;

impl CookieName {
    /// Checks `text` against the rules.
    ///
    /// # Errors
    /// [`InvalidCookieName`].
    pub fn parse(text: &str) -> Result<Self, InvalidCookieName> {
        let ok = (1..=64).contains(&text.len())
            && !text.starts_with("__")
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(CookieName(text.to_owned()))
        } else {
            Err(InvalidCookieName)
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CookieName {
    /// `sessiond`.
    fn default() -> Self {
        CookieName(String::from("sessiond"))
    }
}

impl CookieSettings {
    /// `__Host-sessiond`, `__Host-sessiond-refresh` and `__Host-sessiond-csrf` when `secure`;
    /// the same names without the prefix (which browsers only accept with `Secure`) for
    /// plain-http development.
    pub fn new(secure: bool, same_site: SameSite) -> Self {
        CookieSettings::named(&CookieName::default(), secure, same_site)
    }

    /// As [`CookieSettings::new`] with another base name: `__Host-<name>`,
    /// `__Host-<name>-refresh`, `__Host-<name>-csrf` (without the prefix when not `secure`).
    pub fn named(name: &CookieName, secure: bool, same_site: SameSite) -> Self {
        let prefix = if secure { "__Host-" } else { "" };
        let base = name.as_str();
        CookieSettings {
            secure,
            same_site,
            session: format!("{prefix}{base}"),
            refresh: format!("{prefix}{base}-refresh"),
            csrf: format!("{prefix}{base}-csrf"),
        }
    }

    fn same_site(&self) -> ::cookie::SameSite {
        match self.same_site {
            SameSite::Lax => ::cookie::SameSite::Lax,
            SameSite::Strict => ::cookie::SameSite::Strict,
            SameSite::None => ::cookie::SameSite::None,
        }
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        http_only: bool,
        same_site: ::cookie::SameSite,
        max_age: u64,
    ) -> String {
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
        ::cookie::Cookie::build((name.to_owned(), value.to_owned()))
            .path("/")
            .secure(self.secure)
            .http_only(http_only)
            .same_site(same_site)
            .max_age(::cookie::time::Duration::seconds(max_age))
            .build()
            .to_string()
    }

    /// `Set-Cookie` for the session cookie, living until `until`.
    pub fn session_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = until.duration_since(now).as_secs();
        self.build(&self.session, value, true, self.same_site(), age)
    }

    /// `Set-Cookie` for the JavaScript-readable CSRF cookie, living until `until`.
    pub fn csrf_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = until.duration_since(now).as_secs();
        self.build(&self.csrf, value, false, self.same_site(), age)
    }

    /// `Set-Cookie` for the refresh cookie: always `HttpOnly` and `SameSite=Strict`.
    pub fn refresh_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = until.duration_since(now).as_secs();
        self.build(&self.refresh, value, true, ::cookie::SameSite::Strict, age)
    }

    /// `Set-Cookie` values that delete all three cookies.
    pub fn clear_all(&self) -> [String; 3] {
        [
            self.build(&self.session, "", true, self.same_site(), 0),
            self.build(&self.refresh, "", true, ::cookie::SameSite::Strict, 0),
            self.build(&self.csrf, "", false, self.same_site(), 0),
        ]
    }
}

/// Finds the value of cookie `name` in a `Cookie` request header (parsed by the `cookie` crate).
///
/// Returns `None` when the cookie is absent. When the header carries the name more than once
/// (cookie tossing from a sibling subdomain) the first is returned, as browsers send the most
/// specific cookie first; the `__Host-` prefix the server uses prevents tossing altogether.
pub fn from_header(header: &str, name: &str) -> Option<String> {
    ::cookie::Cookie::split_parse(header)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value_trimmed().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_input_is_length_prefixed() {
        assert_eq!(mac_input("ses-x", "sk-y"), b"5:ses-x:4:sk-y".to_vec());
        assert_ne!(mac_input("a", "bc"), mac_input("ab", "c"));
    }

    #[test]
    fn attributes_follow_the_design() {
        let c = CookieSettings::new(true, SameSite::Lax);
        let now = Timestamp::from_unix_seconds(1_000);
        let later = Timestamp::from_unix_seconds(4_600);
        let s = c.session_cookie("v1.x", now, later);
        assert!(s.starts_with("__Host-sessiond=v1.x;"), "{s}");
        for attr in [
            "HttpOnly",
            "Secure",
            "Path=/",
            "SameSite=Lax",
            "Max-Age=3600",
        ] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(
            !s.contains("Domain"),
            "__Host- cookies must not carry Domain"
        );
        let r = c.refresh_cookie("rt", now, later);
        assert!(
            r.starts_with("__Host-sessiond-refresh=rt;")
                && r.contains("SameSite=Strict")
                && r.contains("HttpOnly"),
            "{r}"
        );
        let x = c.csrf_cookie("csrf", now, later);
        assert!(
            x.starts_with("__Host-sessiond-csrf=csrf;")
                && !x.contains("HttpOnly")
                && x.contains("Secure"),
            "{x}"
        );
        // A deadline already passed is an immediate expiry, never a negative age.
        assert!(c.session_cookie("v", later, now).contains("Max-Age=0"));
        let dev = CookieSettings::new(false, SameSite::Strict);
        let d = dev.session_cookie("v", now, later);
        assert!(d.starts_with("sessiond=v;") && !d.contains("Secure"), "{d}");
        for cleared in dev.clear_all() {
            assert!(cleared.contains("Max-Age=0"), "{cleared}");
        }
    }

    #[test]
    fn header_lookup() {
        let h = "a=1; __Host-sessiond=v1.x.y.z; b=\"2\"";
        assert_eq!(
            from_header(h, "__Host-sessiond").as_deref(),
            Some("v1.x.y.z")
        );
        assert_eq!(from_header(h, "b").as_deref(), Some("2"));
        assert_eq!(from_header(h, "c"), None);
        assert_eq!(from_header("", "c"), None);
    }
}
