//! Three `sessiond serve` processes on one PostgreSQL schema and one Redis: what one node does,
//! every other node sees at once (revocation, one-time claims, refresh rotation, key rotation).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::harness::{jwt_part, postgres_url, redis_url, unique, Cluster, Handle};

async fn three_nodes() -> Cluster {
    Cluster::start(3, &postgres_url(), Some(&redis_url())).await
}

fn handles(cluster: &Cluster) -> Vec<Handle> {
    cluster.nodes.iter().map(|n| n.handle()).collect()
}

/// The credential of a fresh session of `kind` as a validate body, and the session id.
async fn create(node: &Handle, user: &str, kind: &str) -> (Value, String, Value) {
    let created = node
        .post("/v1/sessions", json!({"user_id": user, "kind": kind}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let credential = match kind {
        "cookie" => json!({"cookie": created.body["cookie"]}),
        _ => json!({"access_token": created.body["tokens"]["access_token"]}),
    };
    (credential, id, created.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_node_is_seen_by_every_other_node_at_once() {
    let cluster = three_nodes().await;
    let nodes = handles(&cluster);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for i in 0..40 {
        let kind = if i % 2 == 0 { "cookie" } else { "tokens" };
        let (credential, id, _) = create(a, &format!("rev-{i}"), kind).await;
        // Warm every node with successes first (the second from its row cache): nothing a node
        // remembers may outlive the revoke.
        for node in [b, c] {
            for _ in 0..2 {
                let v = node.post("/v1/sessions/validate", credential.clone()).await;
                assert_eq!(v.status, 200, "{}", v.text);
            }
        }
        let r = a
            .post(&format!("/v1/sessions/{id}/revoke"), json!({}))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        // No sleep: the very next request on another node must already refuse.
        for _ in 0..3 {
            for node in [b, c] {
                node.post("/v1/sessions/validate", credential.clone())
                    .await
                    .assert_problem(401, "session_revoked");
            }
        }
    }
    // Not vacuous: the other nodes answered from their row caches (docs/DESIGN.md §15.5).
    for node in [b, c] {
        let text = node.get("/metrics").await.text;
        let hits =
            crate::rotation::metric(&text, "sessiond_cache_hits_total{cache=\"session_rows\"} ");
        assert!(hits > 0, "no row-cache hit on a node:\n{text}");
    }
}

/// `sessiond sessions revoke` on the cluster's database is another process, with no row cache of
/// its own; it announces the revocation on the row-cache channel and waits for every node that
/// caches (docs/DESIGN.md §15.5), so when it exits the very next request on every node refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_is_refused_by_the_very_next_request_on_every_node() {
    let cluster = three_nodes().await;
    let nodes = handles(&cluster);
    for kind in ["cookie", "tokens"] {
        let (credential, id, _) = create(&nodes[0], &unique("cli-rev-"), kind).await;
        // Each node validates twice: the second answer comes from its row cache.
        for node in &nodes {
            for _ in 0..2 {
                let v = node.post("/v1/sessions/validate", credential.clone()).await;
                assert_eq!(v.status, 200, "{}", v.text);
            }
        }
        let out = cluster.cli(&["sessions", "revoke", &id]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &nodes {
            node.post("/v1/sessions/validate", credential.clone())
                .await
                .assert_problem(401, "session_revoked");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_raced_on_three_nodes_is_won_exactly_once() {
    let cluster = three_nodes().await;
    let nodes = handles(&cluster);
    let id = unique("nodes-claim-");
    let expires_at = (std::time::SystemTime::now() + std::time::Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires_at = rfc3339(expires_at);
    let mut tasks = JoinSet::new();
    for i in 0..300 {
        let node = nodes[i % nodes.len()].clone();
        let body = json!({"id": id, "expires_at": expires_at});
        tasks.spawn(async move { node.post("/v1/claims", body).await });
    }
    let mut statuses = BTreeMap::<u16, usize>::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match reply.status.as_u16() {
            201 => assert_eq!(reply.body["claimed"], true, "{}", reply.text),
            _ => reply.assert_problem(409, "token_already_used"),
        }
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
    }
    eprintln!("claim race over 3 nodes: {statuses:?}");
    assert_eq!(statuses.get(&201), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&409), Some(&299), "{statuses:?}");
}

/// RFC 3339 UTC for unix seconds, without a date library in the tests.
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap();
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_on_three_nodes_converge_on_one_successor() {
    let cluster = three_nodes().await;
    let nodes = handles(&cluster);
    let (_, id, body) = create(&nodes[0], "refresher", "tokens").await;
    let refresh_token = body["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    let original_jti = jwt_part(&refresh_token, 1)["jti"].clone();
    let mut tasks = JoinSet::new();
    for i in 0..60 {
        let node = nodes[i % nodes.len()].clone();
        let body = json!({"refresh_token": refresh_token});
        tasks.spawn(async move { node.post("/v1/tokens/refresh", body).await });
    }
    let mut successors = BTreeSet::new();
    let mut ok = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text);
        ok += 1;
        let token = reply.body["tokens"]["refresh_token"].as_str().unwrap();
        successors.insert(jwt_part(token, 1)["jti"].to_string());
    }
    eprintln!(
        "60 refreshes over 3 nodes: {ok} x 200, {} successor(s)",
        successors.len()
    );
    assert_eq!(ok, 60);
    assert_eq!(successors.len(), 1, "{successors:?}");
    assert!(!successors.contains(&original_jti.to_string()));
    for node in &nodes {
        let s = node.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(s.status, 200, "{}", s.text);
        assert!(s.body["session"]["revoked_at"].is_null(), "{}", s.text);
    }
}

fn cookie_kid(cookie: &Value) -> String {
    cookie["cookie"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(2)
        .unwrap()
        .to_owned()
}

fn token_kid(token: &Value) -> String {
    jwt_part(token["access_token"].as_str().unwrap(), 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_on_one_node_reaches_every_node() {
    let cluster = three_nodes().await;
    let nodes = handles(&cluster);
    let (old_cookie, _, _) = create(&nodes[0], "rot", "cookie").await;
    let (old_token, _, old_body) = create(&nodes[0], "rot", "tokens").await;
    let old_refresh = old_body["tokens"]["refresh_token"].clone();
    for node in &nodes {
        for credential in [&old_cookie, &old_token] {
            let v = node.post("/v1/sessions/validate", credential.clone()).await;
            assert_eq!(v.status, 200, "{}", v.text);
        }
    }

    let out = cluster.cli(&["keys", "rotate"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_key = |purpose: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("rotated {purpose} key")))
            .unwrap_or_else(|| panic!("{stdout}"));
        line.split("new active key ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let (new_cookie_kid, new_access_kid) = (new_key("cookie"), new_key("access"));
    assert_ne!(new_cookie_kid, cookie_kid(&old_cookie));
    assert_ne!(new_access_kid, token_kid(&old_token));

    // Credentials issued before the rotation keep working on every node (retention window).
    for node in &nodes {
        for credential in [&old_cookie, &old_token] {
            let v = node.post("/v1/sessions/validate", credential.clone()).await;
            assert_eq!(v.status, 200, "{}", v.text);
        }
    }
    let r = nodes[1]
        .post("/v1/tokens/refresh", json!({"refresh_token": old_refresh}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Node A learns of the new keys: a credential naming an unknown key id forces a reload
    // (at most once a second); otherwise its snapshot expires within 30 s. Either way, bounded.
    let forged = format!(
        "v1.ses-AAAAAAAAAAAAAAAAAAAAAA.{new_cookie_kid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let (new_cookie, new_token) = loop {
        nodes[0]
            .post("/v1/sessions/validate", json!({"cookie": forged}))
            .await
            .assert_problem(401, "invalid_credential");
        let (cookie, _, _) = create(&nodes[0], "rot2", "cookie").await;
        let (token, _, _) = create(&nodes[0], "rot2", "tokens").await;
        if cookie_kid(&cookie) == new_cookie_kid && token_kid(&token) == new_access_kid {
            break (cookie, token);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node A still signs with the old keys"
        );
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    };
    // B and C have never seen the new key ids: they reload on the unknown kid, at once.
    for node in &nodes {
        for credential in [&new_cookie, &new_token, &old_cookie, &old_token] {
            let v = node.post("/v1/sessions/validate", credential.clone()).await;
            assert_eq!(v.status, 200, "{}: {}", node.base, v.text);
        }
    }
}
