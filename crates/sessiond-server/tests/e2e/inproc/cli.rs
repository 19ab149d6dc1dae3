//! The admin commands of the real binary against a server running in this process (same data
//! directory and master-key file); the API key cache's expiry on the manual clock.

use serde_json::json;

use super::{spawn_app, Options, TestApp};
use crate::harness::cli_in;

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
