//! The example application driven request by request (tower's `oneshot`) on the embedded
//! library (SQLite in a temporary directory): sign in, a CSRF-protected form, escaping, the
//! devices page (revoke another device), logout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{MasterKey, Secret, SessionService};
use sessiond_axum::Sessions;
use sessiond_axum_app::{app, with_login_redirect, Notes, DEMO_PASSWORD};
use sessiond_server::testing::InProcess;
use tower::ServiceExt as _;

struct Reply {
    status: StatusCode,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

/// A browser's cookie jar: name → value.
#[derive(Default, Clone)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Takes `Set-Cookie` values in: a cleared cookie (empty value) is removed.
    fn take(&mut self, set_cookies: &[String]) {
        for c in set_cookies {
            let (name, value) = c.split(';').next().unwrap().split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }
}

async fn send(app: &Router, jar: &mut Jar, method: &str, path: &str, form: Option<&str>) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::USER_AGENT, "test-browser/1.0");
    if !jar.0.is_empty() {
        request = request.header(header::COOKIE, jar.header());
    }
    let body = match form {
        Some(form) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    jar.take(&cookies);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        location,
        cookies,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn sign_in(app: &Router, jar: &mut Jar, user: &str) {
    let form = format!("user={user}&password={}", DEMO_PASSWORD.replace(' ', "+"));
    let r = send(app, jar, "POST", "/login", Some(&form)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/"));
    assert!(jar.get("__Host-sessiond").is_some());
}

fn csrf(jar: &Jar) -> String {
    jar.get("__Host-sessiond-csrf").unwrap().to_owned()
}

/// The default: the embedded library on SQLite.
#[tokio::test]
async fn a_visit_on_the_embedded_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    let service = SessionService::builder(Arc::new(store), MasterKey::from_bytes([3; 32]))
        .start()
        .await
        .unwrap();
    visit(&with_login_redirect(Sessions::embedded(service))).await;
}

/// The one setting: the same application against a sessiond server (in this process).
#[tokio::test]
async fn a_visit_on_a_remote_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let key = "example-app-test-key-0123456789abcdefghij";
    let server = InProcess::start_in(dir.path(), "", key).await.unwrap();
    let client = sessiond_client::Client::builder(server.base_url())
        .api_key(Secret::new(key.to_owned()))
        .build()
        .unwrap();
    visit(&with_login_redirect(Sessions::remote(client))).await;
}

/// Sign in, a CSRF-protected form, escaping, the devices page, logout.
async fn visit(sessions: &Sessions) {
    let app = app(sessions, Notes::default());

    let mut laptop = Jar::default();
    let r = send(&app, &mut laptop, "GET", "/", None).await;
    assert!(r.body.contains("not signed in"), "{}", r.body);
    // Pages behind the session send strangers to the login form.
    let r = send(&app, &mut laptop, "GET", "/notes", None).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
    let r = send(
        &app,
        &mut laptop,
        "POST",
        "/login",
        Some("user=alice&password=guess"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.cookies.is_empty());
    sign_in(&app, &mut laptop, "alice").await;
    let r = send(&app, &mut laptop, "GET", "/", None).await;
    assert!(r.body.contains("Signed in as <b>alice</b>"), "{}", r.body);

    // The notes form carries the CSRF token; without it the post is refused (403).
    let r = send(&app, &mut laptop, "GET", "/notes", None).await;
    assert!(
        r.body
            .contains(&format!("name=\"csrf_token\" value=\"{}\"", csrf(&laptop))),
        "{}",
        r.body
    );
    let r = send(&app, &mut laptop, "POST", "/notes", Some("text=hi")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let form = format!(
        "text=%3Cscript%3Ealert(1)%3C%2Fscript%3E&csrf_token={}",
        csrf(&laptop)
    );
    let r = send(&app, &mut laptop, "POST", "/notes", Some(&form)).await;
    assert_eq!(r.location.as_deref(), Some("/notes"), "{}", r.body);
    let r = send(&app, &mut laptop, "GET", "/notes", None).await;
    assert!(
        r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<script>"));

    // A second device; the devices page lists both, marks this one, revokes the other.
    let mut phone = Jar::default();
    sign_in(&app, &mut phone, "alice").await;
    let r = send(&app, &mut laptop, "GET", "/devices", None).await;
    assert_eq!(r.body.matches("this device").count(), 1, "{}", r.body);
    assert_eq!(r.body.matches("test-browser/1.0").count(), 2, "{}", r.body);
    let start = r.body.find("/devices/ses-").unwrap() + "/devices/".len();
    let other = &r.body[start..start + r.body[start..].find('/').unwrap()];
    let form = format!("csrf_token={}", csrf(&laptop));
    let r = send(
        &app,
        &mut laptop,
        "POST",
        &format!("/devices/{other}/revoke"),
        Some(&form),
    )
    .await;
    assert_eq!(r.location.as_deref(), Some("/devices"));
    let r = send(&app, &mut phone, "GET", "/notes", None).await;
    assert_eq!(
        r.location.as_deref(),
        Some("/login"),
        "the phone is logged out"
    );

    // Log out: the cookies are cleared and the session no longer opens pages.
    let before = laptop.clone();
    let r = send(&app, &mut laptop, "POST", "/logout", Some(&form)).await;
    assert_eq!(r.location.as_deref(), Some("/"));
    assert!(laptop.get("__Host-sessiond").is_none());
    let mut stale = before;
    let r = send(&app, &mut stale, "GET", "/notes", None).await;
    assert_eq!(r.location.as_deref(), Some("/login"));
}
