//! The command line: configuration refusals, the embedded default, admin commands while the
//! server runs.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sessiond::{Clock as _, SystemClock, Timestamp};
use sha2::{Digest as _, Sha256};

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

const S1: &str = "first-shared-hs256-secret-7c1e-0123456789";
const S2: &str = "second-shared-hs256-secret-7c1e-012345678";

fn hs256(secret: Option<&str>) -> String {
    let mut config = String::from("[token_sessions]\naccess_alg = \"HS256\"\n");
    if let Some(secret) = secret {
        config.push_str(&format!("hs256_secret = \"{secret}\"\n"));
    }
    config
}

/// One access key as `sessiond keys list` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    id: String,
    state: String,
    origin: Option<String>,
    verify_until: Option<Timestamp>,
}

async fn access_keys(dir: &Path) -> Vec<Listed> {
    let out = cli_in(dir, &["keys", "list"], &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (id, purpose, state, until) = (
        column("id").unwrap(),
        column("purpose").unwrap(),
        column("state").unwrap(),
        column("verify_until").unwrap(),
    );
    let origin = column("origin");
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[purpose] == "access")
        .map(|f| Listed {
            id: f[id].to_owned(),
            state: f[state].to_owned(),
            origin: origin.map(|o| f[o].to_owned()),
            verify_until: Timestamp::parse_rfc3339(f[until]).ok(),
        })
        .collect()
}

/// `serve` in `dir` with `config`, expected to refuse to start: its exit status and output. A
/// server that starts instead fails the test (and is killed).
async fn refused_start(dir: &Path, config: &str) -> (Option<i32>, String) {
    write_config(dir, config);
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        cli_in(dir, &["serve", "--listen", "127.0.0.1:0"], &[]),
    )
    .await;
    let Ok(out) = started else {
        panic!("serve started (it did not exit within 20 s)");
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    (out.status.code(), text)
}

/// Starts `serve` in `dir` with `config`, and stops it.
async fn start_and_stop(dir: tempfile::TempDir, config: String) -> tempfile::TempDir {
    let s = spawn_in(
        dir,
        Options {
            config,
            ..Options::default()
        },
    )
    .await;
    s.stop_keeping_dir().await.1
}

fn active(keys: &[Listed]) -> Listed {
    let active: Vec<_> = keys.iter().filter(|k| k.state == "active").collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    active[0].clone()
}

/// Issue 12 item 3: replacing `hs256_secret` retires the old key for the access bound
/// (access_ttl 10 min + leeway 30 s + snapshot age 30 s + clock skew 30 s = 11 min 30 s), not for
/// `keys.retention` (24 h), while tokens it signed still validate.
#[tokio::test]
async fn a_replaced_hs256_secret_verifies_only_for_the_access_bound() {
    let s = spawn(Options {
        config: hs256(Some(S1)),
        ..Options::default()
    })
    .await;
    let created = s
        .post("/v1/sessions", json!({"user_id": "ola", "kind": "tokens"}))
        .await;
    let token = created.body["tokens"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, dir) = s.stop_keeping_dir().await;
    let replaced = active(&access_keys(dir.path()).await);

    let s = spawn_in(
        dir,
        Options {
            config: hs256(Some(S2)),
            ..Options::default()
        },
    )
    .await;
    let v = s
        .post("/v1/sessions/validate", json!({"access_token": token}))
        .await;
    assert_eq!(v.status, 200, "a token of the replaced secret: {}", v.text);
    let (_, dir) = s.stop_keeping_dir().await;
    let keys = access_keys(dir.path()).await;
    let now = SystemClock.now();
    let old = keys.iter().find(|k| k.id == replaced.id).unwrap();
    assert_eq!(old.state, "retired");
    let until = old.verify_until.unwrap();
    assert!(
        until <= now.saturating_add(Duration::from_secs(690))
            && until
                > now
                    .saturating_sub(Duration::from_secs(60))
                    .saturating_add(Duration::from_secs(630)),
        "the replaced key verifies for the access bound, not 24 h: until {until:?}, now {now:?}"
    );
    assert_ne!(active(&keys).id, replaced.id);
}

/// Issue 12 item 3: a node configured with a replaced (or withdrawn) secret refuses to start —
/// exit 1, naming `token_sessions.hs256_secret` and the retired key, never the secret — and
/// changes nothing, so an old configuration in a rolling deploy cannot flip the deployment back.
#[tokio::test]
async fn a_node_configured_with_a_retired_hs256_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let dir = start_and_stop(dir, hs256(Some(S1))).await;
    let first = active(&access_keys(dir.path()).await);
    let dir = start_and_stop(dir, hs256(Some(S2))).await;
    let keys = access_keys(dir.path()).await;

    let (code, out) = refused_start(dir.path(), &hs256(Some(S1))).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("token_sessions.hs256_secret"), "{out}");
    assert!(out.contains(&first.id), "names the retired key: {out}");
    assert!(!out.contains("listening on"), "{out}");
    assert!(
        !out.contains(S1) && !out.contains(S2),
        "a secret was echoed: {out}"
    );
    assert_eq!(access_keys(dir.path()).await, keys, "nothing changed");

    // Withdrawn, then configured again: refused as well.
    let dir = start_and_stop(dir, hs256(None)).await;
    let (code, out) = refused_start(dir.path(), &hs256(Some(S2))).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("token_sessions.hs256_secret"), "{out}");
    assert!(!out.contains(S2), "a secret was echoed: {out}");
}

/// Issue 12 item 3: a node started without `hs256_secret` rotates away from the operator key to
/// a generated key (of `access_alg`), and a later start without it changes nothing.
#[tokio::test]
async fn withdrawing_the_hs256_secret_rotates_away_to_a_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    let dir = start_and_stop(dir, hs256(Some(S1))).await;
    let operator = active(&access_keys(dir.path()).await);
    let dir = start_and_stop(dir, hs256(None)).await;
    let keys = access_keys(dir.path()).await;
    let generated = active(&keys);
    assert_ne!(
        generated.id, operator.id,
        "the operator key is still active: {keys:?}"
    );
    let withdrawn = keys.iter().find(|k| k.id == operator.id).unwrap();
    assert_eq!(withdrawn.state, "retired");
    assert_eq!(generated.origin.as_deref(), Some("generated"));
    assert_eq!(withdrawn.origin.as_deref(), Some("operator"));
    let dir = start_and_stop(dir, hs256(None)).await;
    assert_eq!(access_keys(dir.path()).await, keys, "never rotates again");
}

/// Issue 12 item 3: the origin of an operator key is recorded (`keys list`: `operator`), by a
/// fingerprint that is neither the secret nor its plain SHA-256: no file of the database holds
/// either (raw or hex).
#[tokio::test]
async fn operator_keys_are_recorded_without_the_secret_or_its_plain_hash() {
    let dir = tempfile::tempdir().unwrap();
    let dir = start_and_stop(dir, hs256(Some(S1))).await;
    let dir = start_and_stop(dir, hs256(Some(S2))).await;
    let keys = access_keys(dir.path()).await;
    // The bootstrap key and S1's are made by one start, often in the same millisecond, and the
    // listing orders equal creation times by id: compare states and origins as a set.
    let mut origins: Vec<_> = keys
        .iter()
        .map(|k| (k.state.as_str(), k.origin.as_deref()))
        .collect();
    origins.sort_unstable();
    assert_eq!(
        origins,
        vec![
            ("active", Some("operator")),
            ("retired", Some("generated")),
            ("retired", Some("operator"))
        ],
        "bootstrap key, S1, S2: {keys:?}"
    );
    for secret in [S1, S2] {
        let digest = Sha256::digest(secret.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            for needle in [secret.as_bytes(), digest.as_slice(), hex.as_bytes()] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "the database holds a secret or its plain hash"
                );
            }
        }
    }
}
