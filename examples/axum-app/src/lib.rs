//! A small server-rendered application on `sessiond-axum`: a login form (a stand-in password
//! check), pages behind the session, a CSRF-protected form, a "your devices" page (list, revoke
//! one, log out the others) and logout. The same code runs on the embedded library or against a
//! remote sessiond server: only the [`Sessions`] given to [`app`] differ (see `main.rs`).
//!
//! Pages are plain HTML built with `format!`; every value that comes from a user or a browser
//! (user names, notes, User-Agent strings, ids) goes through [`escape`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use sessiond::error::ErrorCode;
use sessiond::{NewSession, SessionId, UserId};
use sessiond_axum::{CookieAuth, CsrfForm, LoginRequest, Refusal, Sessions};
use subtle::ConstantTimeEq;

/// The stand-in for a real user store: every demo user has this password. A real application
/// checks a password hash (argon2, scrypt) here.
pub const DEMO_PASSWORD: &str = "correct horse battery staple";

/// The demo users.
pub const DEMO_USERS: [&str; 2] = ["alice", "bob"];

/// The application's own state: each user's notes, in memory.
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<Mutex<HashMap<UserId, Vec<String>>>>);

impl Notes {
    fn of(&self, user: &UserId) -> Vec<String> {
        let notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        notes.get(user).cloned().unwrap_or_default()
    }

    fn add(&self, user: &UserId, note: String) {
        let mut notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        notes.entry(user.clone()).or_default().push(note);
    }
}

/// The sessions the application uses: `sessions` with the refusal handler pages want (a page
/// without a valid session redirects to the login form; a CSRF failure and an outage keep their
/// own answers, 403 and 503).
pub fn with_login_redirect(sessions: sessiond_axum::SessionsBuilder) -> Sessions {
    sessions
        .on_refusal(|refusal: Refusal, _parts| {
            let keep = refusal.is_outage()
                || matches!(
                    refusal.code(),
                    ErrorCode::CsrfMissing | ErrorCode::CsrfMismatch
                );
            if keep {
                refusal.into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        })
        .build()
}

/// The application's router.
pub fn app(sessions: &Sessions, notes: Notes) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/notes", get(notes_page).post(add_note))
        .route("/devices", get(devices))
        .route("/devices/others", post(log_out_others))
        .route("/devices/{id}/revoke", post(revoke_device))
        .route("/logout", post(logout))
        .layer(axum::Extension(notes))
        .layer(sessions.layer())
}

/// HTML-escapes `text` for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body><h1>{}</h1>{body}</body></html>",
        escape(title),
        escape(title)
    ))
}

/// A hidden field with the CSRF token the browser holds, for a form that posts back here.
fn csrf_field(auth: &CookieAuth) -> String {
    let token = auth
        .csrf_token()
        .map(|t| escape(t.expose()))
        .unwrap_or_default();
    format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">")
}

/// A form that is only a button posting to `action` (with the CSRF token).
fn button(auth: &CookieAuth, action: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\">{}<button>{}</button></form>",
        escape(action),
        csrf_field(auth),
        escape(label)
    )
}

async fn home(auth: Option<CookieAuth>) -> Html<String> {
    match auth {
        Some(auth) => page(
            "sessiond axum example",
            &format!(
                "<p>Signed in as <b>{}</b>.</p>\
                 <p><a href=\"/notes\">Your notes</a> · <a href=\"/devices\">Your devices</a></p>{}",
                escape(auth.session.user_id.as_str()),
                button(&auth, "/logout", "Log out")
            ),
        ),
        None => page(
            "sessiond axum example",
            "<p>You are not signed in. <a href=\"/login\">Sign in</a></p>",
        ),
    }
}

fn login_page(message: &str) -> Html<String> {
    page(
        "Sign in",
        &format!(
            "<p>{}</p><form method=\"post\" action=\"/login\">\
             <label>User <input name=\"user\" autocomplete=\"username\"></label> \
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"current-password\"></label> <button>Sign in</button></form>\
             <p>Demo users: {} (password: <code>{}</code>)</p>",
            escape(message),
            DEMO_USERS.join(", "),
            escape(DEMO_PASSWORD)
        ),
    )
}

async fn login_form() -> Html<String> {
    login_page("")
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

/// The stand-in password check: a known user and the demo password, compared in constant time.
fn password_ok(user: &str, password: &str) -> bool {
    DEMO_USERS.contains(&user) && bool::from(password.as_bytes().ct_eq(DEMO_PASSWORD.as_bytes()))
}

async fn login(sessions: Sessions, request: LoginRequest, Form(form): Form<Login>) -> Response {
    if !password_ok(&form.user, &form.password) {
        return (
            StatusCode::UNAUTHORIZED,
            login_page("Wrong user or password."),
        )
            .into_response();
    }
    let Ok(user) = UserId::new(form.user) else {
        return (StatusCode::BAD_REQUEST, login_page("Invalid user.")).into_response();
    };
    // A session cookie the browser already had is revoked here, never reused.
    match sessions.log_in(&request, NewSession::new(user)).await {
        Ok(cookies) => (cookies, Redirect::to("/")).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn notes_page(auth: CookieAuth, axum::Extension(notes): axum::Extension<Notes>) -> Response {
    let items: String = notes
        .of(&auth.session.user_id)
        .iter()
        .map(|n| format!("<li>{}</li>", escape(n)))
        .collect();
    page(
        "Your notes",
        &format!(
            "<ul>{items}</ul><form method=\"post\" action=\"/notes\">{}\
             <input name=\"text\" required> <button>Add</button></form><p><a href=\"/\">Home</a></p>",
            csrf_field(&auth)
        ),
    )
    .into_response()
}

#[derive(Deserialize)]
struct Note {
    text: String,
}

/// The form's CSRF token was checked against the session before this runs.
async fn add_note(
    axum::Extension(notes): axum::Extension<Notes>,
    CsrfForm { auth, form }: CsrfForm<Note>,
) -> Response {
    let text = form.text.trim();
    if text.is_empty() || text.len() > 1000 {
        return (StatusCode::BAD_REQUEST, "a note is 1 to 1000 bytes").into_response();
    }
    notes.add(&auth.session.user_id, text.to_owned());
    Redirect::to("/notes").into_response()
}

async fn devices(sessions: Sessions, auth: CookieAuth) -> Response {
    let list = match sessions.devices(&auth).await {
        Ok(list) => list,
        Err(refusal) => return refusal.into_response(),
    };
    let rows: String = list
        .iter()
        .map(|d| {
            let s = &d.session;
            let action = if d.current {
                String::from("<b>this device</b>")
            } else {
                button(
                    &auth,
                    &format!("/devices/{}/revoke", s.id.as_str()),
                    "Log out",
                )
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                escape(&s.created_at.to_rfc3339()),
                escape(&s.last_seen_at.to_rfc3339()),
                escape(s.ip.as_deref().unwrap_or("-")),
                escape(s.user_agent.as_deref().unwrap_or("-")),
            )
        })
        .collect();
    page(
        "Your devices",
        &format!(
            "<table><tr><th>Signed in</th><th>Last seen</th><th>IP</th><th>Browser</th><th></th></tr>\
             {rows}</table>{}<p><a href=\"/\">Home</a></p>",
            button(&auth, "/devices/others", "Log out all other devices")
        ),
    )
    .into_response()
}

/// The empty form of a button.
#[derive(Deserialize)]
struct Nothing {}

async fn revoke_device(
    sessions: Sessions,
    Path(id): Path<String>,
    CsrfForm { auth, .. }: CsrfForm<Nothing>,
) -> Response {
    let Ok(id) = SessionId::parse(&id) else {
        return (StatusCode::NOT_FOUND, "no such device").into_response();
    };
    // Only among the caller's own sessions: another user's id is "not found".
    match sessions.revoke_device(&auth, &id).await {
        Ok(true) => Redirect::to("/devices").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no such device").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn log_out_others(sessions: Sessions, CsrfForm { auth, .. }: CsrfForm<Nothing>) -> Response {
    match sessions.log_out_others(&auth).await {
        Ok(_) => Redirect::to("/devices").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn logout(sessions: Sessions, CsrfForm { auth, .. }: CsrfForm<Nothing>) -> Response {
    match sessions.log_out(&auth).await {
        Ok(cleared) => (
            cleared,
            [(header::CACHE_CONTROL, "no-store")],
            Redirect::to("/"),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn only_known_users_with_the_password_pass() {
        assert!(password_ok("alice", DEMO_PASSWORD));
        assert!(!password_ok("alice", "guess"));
        assert!(!password_ok("mallory", DEMO_PASSWORD));
    }
}
