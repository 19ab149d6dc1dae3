//! The admin commands of the real binary against a server running in this process (same data
//! directory and master-key file); the API key cache's expiry on the manual clock.

use serde_json::json;

use sessiond_server::dto::KindParam;

use super::{spawn_app, Options, TestApp};
use crate::harness::{cli_in, jwt_part};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn admin_commands_work_while_the_server_runs() {
    let s = spawn_app(Options::default()).await;
    // An API key made by the CLI works against the running server.
    let out = s.cli(&["api-keys", "create", "--name", "backend"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout
        .lines()
        .find(|l| l.starts_with("sessiond_"))
        .unwrap()
        .to_owned();
    let r = s
        .request(
            reqwest::Method::POST,
            "/v1/sessions",
            Some(&json!({"user_id": "jan", "kind": "cookie"})),
            &[("authorization", &format!("Bearer {key}"))],
            false,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["session"]["id"].as_str().unwrap().to_owned();
    let cookie = r.body["cookie"].as_str().unwrap().to_owned();
    let list = s.cli(&["api-keys", "list"]).await;
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(
        listing.contains("backend") && !listing.contains(&key),
        "{listing}"
    );

    let out = s.cli(&["sessions", "list", "--user", "jan"]).await;
    assert!(String::from_utf8(out.stdout).unwrap().contains(&id));
    let out = s.cli(&["keys", "rotate", "--purpose", "cookie"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = String::from_utf8(s.cli(&["keys", "list"]).await.stdout).unwrap();
    assert_eq!(keys.matches(" retired ").count(), 1, "{keys}");
    // The cookie signed by the now-retired key still validates (retention), on the running server.
    assert_eq!(
        s.post("/v1/sessions/validate", json!({"cookie": cookie}))
            .await
            .status,
        200
    );
    let out = s.cli(&["sessions", "revoke", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    s.post("/v1/sessions/validate", json!({"cookie": cookie}))
        .await
        .assert_problem(401, "session_revoked");
    let gc = s.cli(&["gc"]).await;
    assert!(String::from_utf8(gc.stdout)
        .unwrap()
        .starts_with("deleted "));
    let key_id = listing
        .lines()
        .find(|l| l.contains("backend"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(s
        .cli(&["api-keys", "revoke", &key_id])
        .await
        .status
        .success());
    // Revocation reaches the server when its API key cache entry ends (5 s after the key was
    // last checked against the database): on the manual clock, not a moment earlier or later.
    let with_key = |s: &'_ TestApp| {
        let auth = format!("Bearer {key}");
        let s = s.handle();
        async move {
            s.send_with(
                reqwest::Method::GET,
                "/v1/users/jan/sessions",
                None,
                &[("authorization", &auth)],
                false,
            )
            .await
        }
    };
    let cached = with_key(&s).await;
    assert_eq!(cached.status, 200, "still cached: {}", cached.text);
    s.advance(std::time::Duration::from_millis(4_999));
    assert_eq!(with_key(&s).await.status, 200, "still cached");
    s.advance(std::time::Duration::from_millis(1));
    with_key(&s).await.assert_problem(401, "unauthorized");
    let help = cli_in(s.dir.path(), &["--help"], &[]).await;
    let text = String::from_utf8(help.stdout).unwrap();
    for cmd in ["serve", "migrate", "keys", "sessions", "api-keys", "gc"] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
    }
    s.stop().await;
}

/// `sessiond keys retire` (issue 12 item 3): the key ends in the database at once, and the
/// running server — another process's view, serving from its key snapshot — refuses credentials
/// signed by it once its snapshot is `cache_ttl` (30 s) old, on its manual clock. A second
/// retire changes nothing; an unknown id fails.
#[tokio::test]
async fn keys_retire_ends_a_key_on_the_running_server_within_the_snapshot_age() {
    let s = spawn_app(Options::default()).await;
    let created = s.create_session("pia", KindParam::Tokens).await;
    let token = created.tokens.unwrap().access_token;
    s.validate_access_token(&token).await.unwrap();
    let kid = jwt_part(&token, 0)["kid"].as_str().unwrap().to_owned();

    let out = s.cli(&["keys", "retire", &kid]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("ended {kid}")), "{text}");
    assert!(text.contains("within 30s"), "states the bound: {text}");
    assert!(text.contains("new active access key"), "{text}");
    let list = String::from_utf8(s.cli(&["keys", "list"]).await.stdout).unwrap();
    let row = list.lines().find(|l| l.starts_with(&kid)).unwrap();
    assert!(row.contains(" retired "), "{row}");

    s.advance(std::time::Duration::from_secs(30));
    s.validate_access_token(&token)
        .await
        .unwrap_err()
        .assert_problem(401, "invalid_credential");
    let fresh = s.create_session("pia", KindParam::Tokens).await;
    s.validate_access_token(&fresh.tokens.unwrap().access_token)
        .await
        .unwrap();

    let again = s.cli(&["keys", "retire", &kid]).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8(again.stdout)
        .unwrap()
        .contains("nothing changed"));
    let unknown = s
        .cli(&["keys", "retire", "sk-AAAAAAAAAAAAAAAAAAAAAA"])
        .await;
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    s.stop().await;
}

/// A CLI revoke on the embedded SQLite default is refused by the very next request, for a
/// cookie and for an access token the verified-token cache already holds, both of whose rows
/// the server's row cache holds: a held row answers only on the proof that nobody else wrote
/// since (docs/DESIGN.md §15.4), and the CLI's write (no row cache of its own, so counted as
/// anonymous) moves what that proof reads.
#[tokio::test]
async fn a_cli_revoke_is_refused_by_the_very_next_request() {
    let s = spawn_app(Options::default()).await;
    let cookie_session = s.create_session("kim", KindParam::Cookie).await;
    let cookie = cookie_session.cookie.unwrap();
    let token_session = s.create_session("kim", KindParam::Tokens).await;
    let access = token_session.tokens.unwrap().access_token;
    for _ in 0..3 {
        s.validate_cookie(&cookie).await.unwrap();
        s.validate_access_token(&access).await.unwrap();
    }
    for id in [&cookie_session.session.id, &token_session.session.id] {
        let out = s.cli(&["sessions", "revoke", id]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    s.post("/v1/sessions/validate", json!({"cookie": cookie}))
        .await
        .assert_problem(401, "session_revoked");
    s.post("/v1/sessions/validate", json!({"access_token": access}))
        .await
        .assert_problem(401, "session_revoked");
    s.stop().await;
}
