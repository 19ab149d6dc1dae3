//! Smoke run of the axum layer (`sessiond-axum`, `Sessions::remote`) against the real binary:
//! an application served over TCP, driven by HTTP requests, its sessions on a sessiond process.
//! The whole route suite runs against the in-process server in `sessiond-axum`'s own tests.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sessiond::{NewSession, RequestContext, Secret, UserId};
use sessiond_axum::{CookieAuth, LoginRequest, Sessions};

use crate::harness::{spawn, Options};

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(sessions: Sessions, request: LoginRequest, Form(form): Form<Login>) -> Response {
    let Ok(user) = UserId::new(form.user) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match sessions.log_in(&request, NewSession::new(user)).await {
        Ok(cookies) => (cookies, "welcome").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn me(auth: CookieAuth) -> Json<serde_json::Value> {
    Json(json!({"user": auth.session.user_id.as_str()}))
}

async fn transfer(_auth: CookieAuth) -> &'static str {
    "transferred"
}

async fn logout(sessions: Sessions, auth: CookieAuth) -> Response {
    match sessions.log_out(&auth).await {
        Ok(cleared) => (cleared, "bye").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The application on 127.0.0.1:0; its base URL.
async fn serve(sessions: &Sessions) -> String {
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/transfer", post(transfer))
        .route("/logout", post(logout))
        .layer(sessions.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{addr}")
}

fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (n, v) = c.split(';').next()?.split_once('=')?;
            (n == name).then(|| v.to_owned())
        })
}

async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_layer_on_the_real_binary() {
    let server = spawn(Options::default()).await;
    let client = sessiond_client::Client::builder(server.base.clone())
        .api_key(Secret::new(server.api_key.clone()))
        .build()
        .unwrap();
    let sessions = Sessions::remote(client).build();
    let app = serve(&sessions).await;
    let http = reqwest::Client::new();

    let r = http
        .post(format!("{app}/login"))
        .form(&[("user", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = cookie(&r, "__Host-sessiond").unwrap();
    let csrf = cookie(&r, "__Host-sessiond-csrf").unwrap();
    let jar = format!("__Host-sessiond={session}");

    let r = http
        .get(format!("{app}/me"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["user"],
        "alice"
    );
    let r = http
        .post(format!("{app}/transfer"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (403, "csrf_missing".to_owned()));
    let r = http
        .post(format!("{app}/transfer"))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "transferred");

    // A long-lived connection's watch ends when the session is logged out.
    let validated = sessions
        .backend()
        .validate_cookie(&session, &RequestContext::default())
        .await
        .unwrap();
    let watcher = sessions.clone();
    let watching = tokio::spawn(async move { watcher.ended(&validated).await });
    let r = http
        .post(format!("{app}/logout"))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cookie(&r, "__Host-sessiond").as_deref(), Some(""));
    let end = tokio::time::timeout(Duration::from_secs(5), watching)
        .await
        .expect("the watch ends within 5 s of the logout")
        .unwrap()
        .unwrap();
    assert_eq!(end.code(), "revoked");
    let r = http
        .get(format!("{app}/me"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (401, "session_revoked".to_owned()));

    // sessiond gone: 503, never 401.
    server.stop().await;
    let r = http
        .get(format!("{app}/me"))
        .header("cookie", &jar)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (503, "unavailable".to_owned()));
}
