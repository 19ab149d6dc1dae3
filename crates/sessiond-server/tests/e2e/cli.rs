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

/// A database URL's credentials, however spelled (user information, a `password` query
/// parameter, another case), appear neither in the start-up log nor in `sessiond migrate`'s
/// output (issue 12, item 6).
#[tokio::test]
async fn database_url_credentials_never_reach_logs_or_output() {
    let schema = crate::harness::Schema::new();
    let base = crate::harness::postgres_url();
    let (scheme, rest) = base.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let sep = if rest.contains('?') { '&' } else { '?' };
    // Trust authentication ignores the password, so the URL still connects.
    let url =
        format!("{scheme}://postgres:pw-in-userinfo-7f3a@{rest}{sep}password=pw-in-query-7f3a");
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("database_schema = \"{}\"\n", schema.name),
    );
    let env = [
        ("SESSIOND_DATABASE_URL", url.as_str()),
        ("SESSIOND_LOG", "debug"),
        ("SESSIOND_MASTER_KEY", crate::harness::CLUSTER_MASTER_KEY),
    ];
    let migrate = cli_in(dir.path(), &["migrate"], &env).await;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&migrate.stdout),
        stderr(&migrate)
    );
    assert_eq!(migrate.status.code(), Some(0), "{out}");
    assert!(out.contains("migrations applied to"), "{out}");
    // `serve` logs the database at start; a bootstrap key that is too short makes it stop right
    // after opening the database, with the start-up log written.
    let serve = cli_in(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0"],
        &[env[0], env[1], env[2], ("SESSIOND_API_KEY", "too-short")],
    )
    .await;
    let logged = format!(
        "{}{}",
        String::from_utf8_lossy(&serve.stdout),
        stderr(&serve)
    );
    assert_ne!(serve.status.code(), Some(0), "{logged}");
    assert!(logged.contains("sessiond starting"), "{logged}");
    // A parameter the driver does not know (here a misspelt password) is refused before
    // anything is logged: the driver would log it, value included.
    let misspelt = format!("{scheme}://{rest}{sep}PassWord=pw-in-case-7f3a");
    let refused = cli_in(
        dir.path(),
        &["migrate"],
        &[("SESSIOND_DATABASE_URL", misspelt.as_str()), env[1], env[2]],
    )
    .await;
    let refusal = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        stderr(&refused)
    );
    assert_eq!(refused.status.code(), Some(2), "{refusal}");
    assert!(refusal.contains("database_url"), "{refusal}");
    for text in [&out, &logged, &refusal] {
        assert!(!text.contains("7f3a"), "a credential leaked: {text}");
    }
}
