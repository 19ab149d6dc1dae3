//! The command line: configuration refusals, the embedded default, admin commands while the
//! server runs.

use serde_json::json;

use crate::harness::{cli_in, spawn, spawn_in, write_config, Options};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (config file, environment, the key the error must name).
type RefusalCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn configuration_refusals_exit_non_zero_and_name_the_key() {
    let cases: &[RefusalCase<'_>] = &[
        ("surprise = true\n", &[], "surprise"),
        (
            "[cookies]\nsecure = false\nsame_site = \"None\"\n",
            &[],
            "cookies.same_site",
        ),
        (
            "[token_sessions]\naccess_alg = \"HS256\"\nhs256_secret = \"short-secret\"\n",
            &[],
            "token_sessions.hs256_secret",
        ),
        (
            "[cookie_sessions]\nidle_ttl = \"forever\"\n",
            &[],
            "cookie_sessions.idle_ttl",
        ),
        ("", &[("SESSIOND_GC__INTERVALL", "1h")], "intervall"),
    ];
    for (config, env, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), config);
        let out = cli_in(dir.path(), &["serve", "--listen", "127.0.0.1:0"], env).await;
        assert_eq!(out.status.code(), Some(2), "{config}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(key),
            "{config}: message does not name {key}: {err}"
        );
        assert!(!err.contains("short-secret"), "the secret is echoed: {err}");
        assert!(
            !dir.path().join("data").exists(),
            "nothing is created for a refused config"
        );
    }
}

#[tokio::test]
async fn a_server_that_cannot_ensure_keys_refuses_to_start() {
    // Start once to create keys under one master key...
    let s = spawn(Options::default()).await;
    let (_, dir) = s.stop_keeping_dir().await;
    // ...then again with another master key: the keys cannot be opened.
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = cli_in(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[("SESSIOND_MASTER_KEY", other)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cannot ensure signing keys"), "{err}");
    assert!(
        !err.contains("listening on"),
        "it must fail before listening: {err}"
    );
}

#[tokio::test]
async fn a_second_start_reuses_master_key_and_signing_keys() {
    let s = spawn(Options::default()).await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "ida", "kind": "cookie"}))
        .await;
    let cookie = created.body["cookie"].as_str().unwrap().to_owned();
    let key_file = s.dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(s.logs().contains("created a new master key file"));
    let key_before = std::fs::read_to_string(&key_file).unwrap();
    let (_, dir) = s.stop_keeping_dir().await;
    let again = spawn_in(dir, Options::default()).await;
    assert_eq!(
        std::fs::read_to_string(again.dir.path().join("data/master.key")).unwrap(),
        key_before
    );
    let v = again
        .post("/v1/sessions/validate", json!({"cookie": cookie}))
        .await;
    assert_eq!(
        v.status, 200,
        "a cookie from the first run validates: {}",
        v.text
    );
    assert!(!again.logs().contains("created a new master key file"));
    again.stop().await;
}

#[tokio::test]
async fn admin_commands_work_while_the_server_runs() {
    let s = spawn(Options::default()).await;
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
    // Revocation reaches the server within the API key cache TTL (5 s); poll instead of sleeping blind.
    let mut refused = false;
    for _ in 0..40 {
        let r = s
            .request(
                reqwest::Method::GET,
                "/v1/users/jan/sessions",
                None,
                &[("authorization", &format!("Bearer {key}"))],
                false,
            )
            .await;
        if r.status == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(refused, "a revoked API key kept working");
    let help = cli_in(s.dir.path(), &["--help"], &[]).await;
    let text = String::from_utf8(help.stdout).unwrap();
    for cmd in ["serve", "migrate", "keys", "sessions", "api-keys", "gc"] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
    }
    s.stop().await;
}
