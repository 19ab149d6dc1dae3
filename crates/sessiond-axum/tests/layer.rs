//! The layer's route tests: one small application on the layer, driven request by request
//! (tower's `oneshot`, no sockets), against a backend given by a harness. The suite is a macro
//! so every backend runs the same tests: the embedded library on SQLite, and a sessiond server
//! running in this process (`RemoteBackend` over HTTP), each on a manual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::{
    ManualClock, MasterKey, NewSession, Secret, SessionId, SessionService, Timestamp, UserId,
};
use sessiond_axum::{CookieAuth, CsrfForm, LoginRequest, NoCsrf, Refusal, RemoteBackend, Sessions};
use sessiond_client::{Backoff, Client};
use sessiond_server::testing::InProcess;
use tower::ServiceExt as _;

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

/// A backend for the suite: the sessions, the clock it runs on, and a way to take it down.
struct Harness {
    sessions: Sessions,
    clock: ManualClock,
    outage: Box<dyn Fn() -> BoxFuture + Send + Sync>,
    /// The server's base URL (remote backends only).
    base_url: Option<String>,
    /// What must live as long as the test (the database's directory, the server).
    _keep: Box<dyn std::any::Any + Send>,
}

/// A service on a fresh SQLite file (in `dir`) and a manual clock.
async fn sqlite_service(dir: &tempfile::TempDir) -> (SessionService, SqliteStore, ManualClock) {
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    let clock = ManualClock::new(T0);
    let backend: Arc<dyn Backend> = Arc::new(store.clone());
    let service = SessionService::builder(backend, MasterKey::from_bytes([9; 32]))
        .clock(Arc::new(clock.clone()))
        .start()
        .await
        .unwrap();
    (service, store, clock)
}

/// The embedded library on SQLite; the outage closes the store's pools, so every later query
/// fails as unavailable.
async fn embedded() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (service, store, clock) = sqlite_service(&dir).await;
    let outage = move || -> BoxFuture {
        let store = store.clone();
        Box::pin(async move { store.close().await })
    };
    Harness {
        sessions: Sessions::embedded(service).build(),
        clock,
        outage: Box::new(outage),
        base_url: None,
        _keep: Box::new(dir),
    }
}

/// A sessiond server in this process (SQLite in a temporary directory, its manual clock shared
/// with the backend) reached over HTTP by `RemoteBackend`; the outage stops the server, so every
/// later call cannot connect.
async fn remote() -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let api_key = "layer-test-key-0123456789abcdefghijklmnop";
    let server = InProcess::start_in(dir.path(), "", api_key).await.unwrap();
    let clock = server.clock().clone();
    let base_url = server.base_url().to_owned();
    let client = Client::builder(server.base_url())
        .api_key(Secret::new(api_key.to_owned()))
        .reconnect(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ))
        .build()
        .unwrap();
    let backend = RemoteBackend::new(client)
        .clock(Arc::new(clock.clone()))
        .recheck(Duration::from_millis(100));
    let server = Arc::new(tokio::sync::Mutex::new(Some(server)));
    let stop = server.clone();
    let outage = move || -> BoxFuture {
        let stop = stop.clone();
        Box::pin(async move {
            if let Some(server) = stop.lock().await.take() {
                server.stop(Duration::from_secs(10)).await.unwrap();
            }
        })
    };
    Harness {
        sessions: Sessions::with_backend(backend).build(),
        clock,
        outage: Box::new(outage),
        base_url: Some(base_url),
        _keep: Box::new((server, dir)),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

#[derive(Deserialize)]
struct Comment {
    text: String,
}

async fn login(
    sessions: Sessions,
    request: LoginRequest,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Ok(user) = UserId::new(form.user) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match sessions.log_in(&request, NewSession::new(user)).await {
        Ok(logged_in) => {
            let body = json!({"session": logged_in.session.id.as_str()});
            (logged_in, Json(body)).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

async fn me(auth: CookieAuth) -> Json<Value> {
    Json(json!({"user": auth.session.user_id.as_str(), "session": auth.session.id.as_str()}))
}

async fn maybe(auth: Option<CookieAuth>) -> String {
    auth.map_or_else(|| "anonymous".to_owned(), |a| a.session.user_id.to_string())
}

async fn transfer(_auth: CookieAuth) -> &'static str {
    "transferred"
}

async fn beacon(_auth: CookieAuth<NoCsrf>) -> &'static str {
    "noted"
}

async fn comment(CsrfForm { auth, form }: CsrfForm<Comment>) -> String {
    format!("{}: {}", auth.session.user_id, form.text)
}

async fn logout(sessions: Sessions, auth: CookieAuth) -> Response {
    match sessions.log_out(&auth).await {
        Ok(cleared) => (cleared, "bye").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn devices(sessions: Sessions, auth: CookieAuth) -> Response {
    match sessions.devices(&auth).await {
        Ok(list) => Json(
            list.iter()
                .map(|d| json!({"id": d.session.id.as_str(), "current": d.current}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn log_out_others(sessions: Sessions, auth: CookieAuth) -> Response {
    match sessions.log_out_others(&auth).await {
        Ok(n) => Json(json!({"revoked": n})).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn revoke_device(sessions: Sessions, auth: CookieAuth, Path(id): Path<String>) -> Response {
    let Ok(id) = SessionId::parse(&id) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match sessions.revoke_device(&auth, &id).await {
        Ok(found) => Json(json!({"revoked": found})).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn app(sessions: &Sessions) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/maybe", get(maybe))
        .route("/transfer", post(transfer))
        .route("/beacon", post(beacon))
        .route("/comment", post(comment))
        .route("/logout", post(logout))
        .route("/devices", get(devices))
        .route("/devices/others", post(log_out_others))
        .route("/devices/{id}/revoke", post(revoke_device))
        .layer(sessions.layer())
}

/// A browser: the cookies it holds, sent with every request.
#[derive(Default, Clone)]
struct Browser {
    session: Option<String>,
    csrf: Option<String>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(self.json()["code"], code, "{}", self.body);
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

async fn send(
    sessions: &Sessions,
    browser: &Browser,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<&str>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = &browser.session {
        request = request.header(header::COOKIE, format!("__Host-sessiond={value}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match form {
        Some(form) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = app(sessions)
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (n, v) = first.split_once('=')?;
        (n == name).then(|| v.to_owned())
    })
}

/// Logs `user` in from `browser` (keeping whatever cookie it held) and returns the browser
/// with the new cookies.
async fn log_in(sessions: &Sessions, browser: &Browser, user: &str) -> Browser {
    let r = send(
        sessions,
        browser,
        "POST",
        "/login",
        &[],
        Some(&format!("user={user}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookies = r.set_cookies();
    Browser {
        session: cookie_value(&cookies, "__Host-sessiond"),
        csrf: cookie_value(&cookies, "__Host-sessiond-csrf"),
    }
}

macro_rules! layer_suite {
    ($name:ident, $harness:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn login_sets_both_cookies_and_authenticates() {
                let h = $harness.await;
                let r = send(
                    &h.sessions,
                    &Browser::default(),
                    "POST",
                    "/login",
                    &[],
                    Some("user=alice"),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.body);
                let cookies = r.set_cookies();
                let session = cookies
                    .iter()
                    .find(|c| c.starts_with("__Host-sessiond="))
                    .unwrap();
                for attr in ["HttpOnly", "Secure", "Path=/", "SameSite=Lax"] {
                    assert!(session.contains(attr), "{session}");
                }
                let csrf = cookies
                    .iter()
                    .find(|c| c.starts_with("__Host-sessiond-csrf="))
                    .unwrap();
                assert!(!csrf.contains("HttpOnly"), "the page reads it: {csrf}");
                let browser = Browser {
                    session: cookie_value(&cookies, "__Host-sessiond"),
                    csrf: cookie_value(&cookies, "__Host-sessiond-csrf"),
                };
                let me = send(&h.sessions, &browser, "GET", "/me", &[], None).await;
                assert_eq!(me.status, 200, "{}", me.body);
                assert_eq!(me.json()["user"], "alice");
                assert_eq!(
                    send(&h.sessions, &browser, "GET", "/maybe", &[], None)
                        .await
                        .body,
                    "alice"
                );
                // No cookie: 401 `unauthorized`; the optional variant is anonymous.
                send(&h.sessions, &Browser::default(), "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "unauthorized");
                assert_eq!(
                    send(&h.sessions, &Browser::default(), "GET", "/maybe", &[], None)
                        .await
                        .body,
                    "anonymous"
                );
                // A forged cookie: 401 with the verdict's code, anonymous for the optional one.
                let forged = Browser {
                    session: Some("v1.forged".into()),
                    csrf: None,
                };
                send(&h.sessions, &forged, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "invalid_credential");
                assert_eq!(
                    send(&h.sessions, &forged, "GET", "/maybe", &[], None)
                        .await
                        .body,
                    "anonymous"
                );
            }

            #[tokio::test]
            async fn a_login_revokes_the_session_the_browser_already_had() {
                let h = $harness.await;
                // The attacker's own session, planted in the victim's browser.
                let planted = log_in(&h.sessions, &Browser::default(), "mallory").await;
                let after = log_in(&h.sessions, &planted, "victim").await;
                assert_ne!(
                    after.session, planted.session,
                    "a new session, never the old one"
                );
                send(&h.sessions, &planted, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "session_revoked");
                let me = send(&h.sessions, &after, "GET", "/me", &[], None).await;
                assert_eq!(me.json()["user"], "victim");
                // A forged or dead cookie does not stop a login.
                let forged = Browser {
                    session: Some("v1.forged".into()),
                    csrf: None,
                };
                log_in(&h.sessions, &forged, "victim").await;
                log_in(&h.sessions, &planted, "victim").await;
            }

            #[tokio::test]
            async fn csrf_is_required_and_enforced_on_unsafe_methods() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "bob").await;
                let token = b.csrf.clone().unwrap();
                send(&h.sessions, &b, "POST", "/transfer", &[], None)
                    .await
                    .assert_problem(403, "csrf_missing");
                send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/transfer",
                    &[("x-csrf-token", "nope")],
                    None,
                )
                .await
                .assert_problem(403, "csrf_mismatch");
                let ok = send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/transfer",
                    &[("x-csrf-token", &token)],
                    None,
                )
                .await;
                assert_eq!((ok.status.as_u16(), ok.body.as_str()), (200, "transferred"));
                // The per-route opt-out.
                assert_eq!(
                    send(&h.sessions, &b, "POST", "/beacon", &[], None)
                        .await
                        .status,
                    200
                );
                // Forms carry the token in a field.
                send(&h.sessions, &b, "POST", "/comment", &[], Some("text=hi"))
                    .await
                    .assert_problem(403, "csrf_missing");
                send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/comment",
                    &[],
                    Some("text=hi&csrf_token=nope"),
                )
                .await
                .assert_problem(403, "csrf_mismatch");
                let form = format!("text=hi&csrf_token={token}");
                let ok = send(&h.sessions, &b, "POST", "/comment", &[], Some(&form)).await;
                assert_eq!((ok.status.as_u16(), ok.body.as_str()), (200, "bob: hi"));
                // Another session's token is a mismatch, not a pass.
                let other = log_in(&h.sessions, &Browser::default(), "bob").await;
                let theirs = other.csrf.unwrap();
                send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/transfer",
                    &[("x-csrf-token", &theirs)],
                    None,
                )
                .await
                .assert_problem(403, "csrf_mismatch");
            }

            #[tokio::test]
            async fn a_revoked_session_is_refused_on_the_next_request() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "carol").await;
                let me = send(&h.sessions, &b, "GET", "/me", &[], None).await;
                let id = SessionId::parse(me.json()["session"].as_str().unwrap()).unwrap();
                h.sessions
                    .backend()
                    .revoke(&id, &sessiond::RevokeReason::logout())
                    .await
                    .unwrap();
                send(&h.sessions, &b, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "session_revoked");
            }

            #[tokio::test]
            async fn expiry_follows_the_clock() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "dave").await;
                h.clock.advance(Duration::from_secs(60));
                assert_eq!(
                    send(&h.sessions, &b, "GET", "/me", &[], None).await.status,
                    200
                );
                // Past the idle window (default 1 hour) without a request.
                h.clock.advance(Duration::from_secs(61 * 60));
                send(&h.sessions, &b, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "session_expired");
            }

            #[tokio::test]
            async fn an_outage_is_503_never_401() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "erin").await;
                (h.outage)().await;
                let r = send(&h.sessions, &b, "GET", "/me", &[], None).await;
                r.assert_problem(503, "unavailable");
                assert!(r.headers.contains_key(header::RETRY_AFTER));
                send(&h.sessions, &b, "GET", "/maybe", &[], None)
                    .await
                    .assert_problem(503, "unavailable");
                send(
                    &h.sessions,
                    &Browser::default(),
                    "POST",
                    "/login",
                    &[],
                    Some("user=erin"),
                )
                .await
                .assert_problem(503, "unavailable");
            }

            #[tokio::test]
            async fn logout_revokes_and_clears_the_cookies() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "frank").await;
                let token = b.csrf.clone().unwrap();
                let r = send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/logout",
                    &[("x-csrf-token", &token)],
                    None,
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.body);
                let cleared = r.set_cookies();
                for name in [
                    "__Host-sessiond=",
                    "__Host-sessiond-csrf=",
                    "__Host-sessiond-refresh=",
                ] {
                    let c = cleared.iter().find(|c| c.starts_with(name)).unwrap();
                    assert!(c.contains("Max-Age=0"), "{c}");
                }
                send(&h.sessions, &b, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "session_revoked");
            }

            #[tokio::test]
            async fn the_devices_page_lists_marks_and_revokes_only_own_sessions() {
                let h = $harness.await;
                let laptop = log_in(&h.sessions, &Browser::default(), "gina").await;
                let phone = log_in(&h.sessions, &Browser::default(), "gina").await;
                let stranger = log_in(&h.sessions, &Browser::default(), "hank").await;
                let list = send(&h.sessions, &laptop, "GET", "/devices", &[], None)
                    .await
                    .json();
                let list = list.as_array().unwrap();
                assert_eq!(list.len(), 2, "{list:?}");
                assert_eq!(list.iter().filter(|d| d["current"] == true).count(), 1);
                // Someone else's session cannot be revoked by naming its id.
                let hank = send(&h.sessions, &stranger, "GET", "/me", &[], None)
                    .await
                    .json();
                let hank_id = hank["session"].as_str().unwrap();
                let token = laptop.csrf.clone().unwrap();
                let r = send(
                    &h.sessions,
                    &laptop,
                    "POST",
                    &format!("/devices/{hank_id}/revoke"),
                    &[("x-csrf-token", &token)],
                    None,
                )
                .await;
                assert_eq!(r.json()["revoked"], false);
                assert_eq!(
                    send(&h.sessions, &stranger, "GET", "/me", &[], None)
                        .await
                        .status,
                    200
                );
                // Log out other devices: the phone ends, the laptop stays.
                let r = send(
                    &h.sessions,
                    &laptop,
                    "POST",
                    "/devices/others",
                    &[("x-csrf-token", &token)],
                    None,
                )
                .await;
                assert_eq!(r.json()["revoked"], 1, "{}", r.body);
                send(&h.sessions, &phone, "GET", "/me", &[], None)
                    .await
                    .assert_problem(401, "session_revoked");
                assert_eq!(
                    send(&h.sessions, &laptop, "GET", "/me", &[], None)
                        .await
                        .status,
                    200
                );
                let list = send(&h.sessions, &laptop, "GET", "/devices", &[], None)
                    .await
                    .json();
                assert_eq!(list.as_array().unwrap().len(), 1);
            }

            #[tokio::test]
            async fn a_watch_ends_at_revocation() {
                let h = $harness.await;
                let b = log_in(&h.sessions, &Browser::default(), "ivan").await;
                let cookie = b.session.clone().unwrap();
                let validated = h
                    .sessions
                    .backend()
                    .validate_cookie(&cookie, &sessiond::RequestContext::default())
                    .await
                    .unwrap();
                let sessions = h.sessions.clone();
                let watching = tokio::spawn(async move { sessions.ended(&validated).await });
                tokio::time::sleep(Duration::from_millis(50)).await;
                assert!(!watching.is_finished());
                let token = b.csrf.clone().unwrap();
                send(
                    &h.sessions,
                    &b,
                    "POST",
                    "/logout",
                    &[("x-csrf-token", &token)],
                    None,
                )
                .await;
                let end = tokio::time::timeout(Duration::from_secs(5), watching)
                    .await
                    .expect("ended within 5 s of the logout")
                    .unwrap()
                    .unwrap();
                assert_eq!(end.code(), "revoked");
            }
        }
    };
}

layer_suite!(embedded_sqlite, embedded());
layer_suite!(remote_in_process, remote());

/// The application's refusal handler: a redirect for verdicts, the default for an outage.
#[tokio::test]
async fn refusals_can_redirect_to_the_login_page() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _store, _clock) = sqlite_service(&dir).await;
    let sessions = Sessions::embedded(service)
        .on_refusal(|refusal: Refusal, _| {
            if refusal.is_outage() {
                refusal.into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        })
        .build();
    let r = send(&sessions, &Browser::default(), "GET", "/me", &[], None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login");
}

/// The event streams the server has open (its `/metrics`).
async fn streams_open(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("sessiond_event_streams_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Validates `browser`'s cookie through the backend and starts watching it.
async fn watch(
    sessions: &Sessions,
    browser: &Browser,
) -> tokio::task::JoinHandle<Result<sessiond::EndReason, sessiond_axum::Failure>> {
    let validated = sessions
        .backend()
        .validate_cookie(
            browser.session.as_deref().unwrap(),
            &sessiond::RequestContext::default(),
        )
        .await
        .unwrap();
    let sessions = sessions.clone();
    tokio::spawn(async move { sessions.ended(&validated).await })
}

async fn end_code(
    task: tokio::task::JoinHandle<Result<sessiond::EndReason, sessiond_axum::Failure>>,
) -> &'static str {
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watch ends within 5 s")
        .unwrap()
        .unwrap()
        .code()
}

/// Remote mode watches every connection of the process on ONE event stream: five watchers, one
/// stream open on the server; a revocation ends only its session's watchers; the clock ends the
/// rest at their deadline.
#[tokio::test]
async fn remote_watchers_share_one_stream() {
    let h = remote().await;
    let base = h.base_url.clone().unwrap();
    let laptop = log_in(&h.sessions, &Browser::default(), "olga").await;
    let phone = log_in(&h.sessions, &Browser::default(), "olga").await;
    let tablet = log_in(&h.sessions, &Browser::default(), "olga").await;
    let mut laptop_watches = Vec::new();
    for _ in 0..3 {
        laptop_watches.push(watch(&h.sessions, &laptop).await);
    }
    let phone_watch = watch(&h.sessions, &phone).await;
    let tablet_watch = watch(&h.sessions, &tablet).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(streams_open(&base).await, 1, "one stream for five watchers");

    let me = send(&h.sessions, &phone, "GET", "/me", &[], None).await;
    let phone_id = SessionId::parse(me.json()["session"].as_str().unwrap()).unwrap();
    h.sessions
        .backend()
        .revoke(&phone_id, &sessiond::RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(end_code(phone_watch).await, "revoked");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!tablet_watch.is_finished(), "another session's revocation");
    assert!(laptop_watches.iter().all(|w| !w.is_finished()));

    // Two hours without a request: past the one-hour idle window.
    h.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(end_code(tablet_watch).await, "idle_expired");
    for w in laptop_watches {
        assert_eq!(end_code(w).await, "idle_expired");
    }
    assert_eq!(
        streams_open(&base).await,
        1,
        "the stream stays for the next watch"
    );
}

/// With the server gone, a remote watch keeps the deadline it knows: the idle deadline cannot be
/// re-checked, so the watch ends there (fail closed) instead of holding the connection open.
#[tokio::test]
async fn a_remote_watch_ends_at_its_deadline_while_the_server_is_down() {
    let h = remote().await;
    let b = log_in(&h.sessions, &Browser::default(), "petra").await;
    let watching = watch(&h.sessions, &b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    (h.outage)().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watching.is_finished(), "an outage alone does not end it");
    h.clock.advance(Duration::from_secs(3601));
    assert_eq!(end_code(watching).await, "idle_expired");
}
