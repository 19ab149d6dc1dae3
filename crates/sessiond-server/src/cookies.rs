//! The browser cookies (docs/DESIGN.md §9.5): names, attributes, and parsing.

use cookie::time::Duration as CookieDuration;
use cookie::{Cookie, SameSite as CookieSameSite};
use sessiond::Timestamp;

use crate::config::{Config, SameSite};

/// Cookie names and attributes in force.
#[derive(Debug, Clone)]
pub(crate) struct CookieSettings {
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

impl CookieSettings {
    /// From the configuration: `__Host-sessiond*` when secure, plain `sessiond*` for plain-http
    /// development.
    pub(crate) fn new(config: &Config) -> Self {
        let prefix = if config.cookies.secure { "__Host-" } else { "" };
        CookieSettings {
            secure: config.cookies.secure,
            same_site: config.cookies.same_site,
            session: format!("{prefix}sessiond"),
            refresh: format!("{prefix}sessiond-refresh"),
            csrf: format!("{prefix}sessiond-csrf"),
        }
    }

    fn same_site(&self) -> CookieSameSite {
        match self.same_site {
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::None => CookieSameSite::None,
        }
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        http_only: bool,
        same_site: CookieSameSite,
        max_age_secs: i64,
    ) -> String {
        Cookie::build((name.to_owned(), value.to_owned()))
            .path("/")
            .secure(self.secure)
            .http_only(http_only)
            .same_site(same_site)
            .max_age(CookieDuration::seconds(max_age_secs.max(0)))
            .build()
            .to_string()
    }

    /// `Set-Cookie` for the session cookie, living until `until`.
    pub(crate) fn session_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = i64::try_from(until.duration_since(now).as_secs()).unwrap_or(i64::MAX);
        self.build(&self.session, value, true, self.same_site(), age)
    }

    /// `Set-Cookie` for the JS-readable CSRF cookie.
    pub(crate) fn csrf_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = i64::try_from(until.duration_since(now).as_secs()).unwrap_or(i64::MAX);
        self.build(&self.csrf, value, false, self.same_site(), age)
    }

    /// `Set-Cookie` for the refresh cookie: always `HttpOnly` and `SameSite=Strict`.
    pub(crate) fn refresh_cookie(&self, value: &str, now: Timestamp, until: Timestamp) -> String {
        let age = i64::try_from(until.duration_since(now).as_secs()).unwrap_or(i64::MAX);
        self.build(&self.refresh, value, true, CookieSameSite::Strict, age)
    }

    /// `Set-Cookie` values that delete all three cookies.
    pub(crate) fn clear_all(&self) -> [String; 3] {
        [
            self.build(&self.session, "", true, self.same_site(), 0),
            self.build(&self.refresh, "", true, CookieSameSite::Strict, 0),
            self.build(&self.csrf, "", false, self.same_site(), 0),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_follow_the_design() {
        let config = Config::load_from(
            None,
            std::iter::empty(),
            &crate::config::Overrides::default(),
        )
        .unwrap();
        let c = CookieSettings::new(&config);
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
        assert!(
            !s.contains("Domain"),
            "__Host- cookies must not carry Domain"
        );
    }
}
