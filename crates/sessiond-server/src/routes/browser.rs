//! The browser-facing endpoints of the hybrid model: refresh and logout with the HttpOnly refresh
//! cookie. Every failure is a uniform 401 `unauthorized` (the reason goes to the log only), except
//! an outage, which is 503 so that clients retry instead of logging the user out.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sessiond::{RequestContext, SessionError};

use super::dto::BrowserRefreshResponse;
use crate::config::Origin;
use crate::parse::client_ip;
use crate::problem::doc::{BrowserRefused, Unavailable};
use crate::problem::ApiError;
use crate::state::AppState;

/// The request's `Origin` must be one of `cookies.allowed_origins` (parsed like them, then
/// compared exactly: scheme, host and port).
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Origin>().ok())
        .is_some_and(|origin| state.config.cookies.allowed_origins.contains(&origin))
}

fn refresh_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| sessiond::cookie::from_header(h, &state.cookies.refresh))
        .filter(|v| !v.is_empty())
}

/// [`client_ip`] of this request, as text for the binding check.
fn request_ip(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Option<String> {
    let forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    client_ip(
        &state.config.sessions.trusted_proxies,
        peer.map(|Extension(ConnectInfo(addr))| addr),
        &forwarded_for,
    )
    .map(|ip| ip.to_string())
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

fn uniform(reason: &'static str) -> ApiError {
    tracing::info!(reason, "browser request refused");
    ApiError::Unauthorized
}

fn fail(e: SessionError) -> ApiError {
    if e.is_outage() {
        return ApiError::Session(e);
    }
    uniform(e.reason())
}

/// Refresh with the HttpOnly cookie: a new access token in the body, the rotated refresh token
/// in the cookie.
#[utoipa::path(post, path = "/auth/browser/refresh", tag = "browser", operation_id = "browser_refresh",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
        ("__Host-sessiond-refresh" = String, Cookie, description = "The HttpOnly refresh cookie \
            (`sessiond-refresh` with `cookies.secure = false`)"),
    ),
    responses(
        (status = 200, description = "A new access token; the rotated refresh token is in `Set-Cookie`",
            body = BrowserRefreshResponse),
        BrowserRefused, Unavailable,
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let token =
        refresh_cookie(&state, &headers).ok_or_else(|| uniform("refresh_cookie_missing"))?;
    let ip = request_ip(&state, peer, &headers);
    let ctx = RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(&headers),
        ..RequestContext::default()
    };
    let now = state.service.now();
    // Browser sessions only; the kind is checked before anything is written.
    let refreshed = state
        .service
        .refresh_browser(&token, &ctx)
        .await
        .map_err(fail)?;
    let cookie = state.cookies.refresh_cookie(
        refreshed.tokens.refresh_token.expose(),
        now,
        refreshed.tokens.refresh_expires_at,
    );
    let body = BrowserRefreshResponse {
        access_token: refreshed.tokens.access_token.expose().clone(),
        expires_at: refreshed.tokens.access_expires_at.to_rfc3339(),
    };
    let mut response = Json(body).into_response();
    set_cookie(&mut response, &cookie);
    no_store(&mut response);
    Ok(response)
}

/// Log out: revoke the session of the refresh cookie, clear the cookies and site data.
#[utoipa::path(post, path = "/auth/browser/logout", tag = "browser", operation_id = "browser_logout",
    params(
        ("Origin" = String, Header, description = "The page's origin: one of `cookies.allowed_origins`"),
        ("__Host-sessiond-refresh" = String, Cookie, description = "The HttpOnly refresh cookie \
            (`sessiond-refresh` with `cookies.secure = false`)"),
    ),
    responses(
        (status = 204,
            description = "Logged out: the session is revoked, the cookies cleared (`Clear-Site-Data`)"),
        BrowserRefused, Unavailable,
    ))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(uniform("origin_not_allowed"));
    }
    let ip = request_ip(&state, peer, &headers);
    let ctx = RequestContext {
        ip: ip.as_deref(),
        user_agent: user_agent(&headers),
        ..RequestContext::default()
    };
    // A browser session whatever the binding (a mismatch is audited, not refused): logging out
    // from a new network must end the session on the server too.
    let outcome = match refresh_cookie(&state, &headers) {
        Some(token) => state.service.logout_browser(&token, &ctx).await.map(|_| ()),
        None => Err(SessionError::InvalidInput("no refresh cookie")),
    };
    let mut response = match outcome {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.is_outage() => return Err(ApiError::Session(e)),
        Err(e) => {
            tracing::info!(
                reason = e.reason(),
                "browser logout without a valid refresh cookie"
            );
            ApiError::Unauthorized.into_response()
        }
    };
    // Clear the cookies either way: a browser that asks to log out must end up logged out.
    for cookie in state.cookies.clear_all() {
        set_cookie(&mut response, &cookie);
    }
    response.headers_mut().insert(
        "clear-site-data",
        HeaderValue::from_static("\"cookies\", \"storage\""),
    );
    no_store(&mut response);
    Ok(response)
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedProxy;
    use std::net::IpAddr;

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
