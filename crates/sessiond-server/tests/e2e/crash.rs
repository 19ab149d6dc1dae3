//! Crash consistency (issue 12, item 11): `kill -9` the server in the middle of a storm of
//! creates, refreshes and revokes, on SQLite and on PostgreSQL, start it again on the same
//! database and check what was acknowledged: every acknowledged write is there, no session has
//! two live refresh chains, the signing keys are whole (one active key per purpose, tokens
//! signed before the crash still verify), and the audit trail holds a record for every
//! acknowledged operation. An answer the client never received acknowledged nothing; a write
//! that committed without its answer may or may not be there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sessiond::audit::{AuditEvent, AuditQuery};
use sessiond::store::postgres::{PgOptions, PgStore};
use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::store::Backend;
use sessiond::SessionId;
use tokio::task::JoinSet;

use crate::harness::{
    cli_in, jwt_part, postgres_url, spawn_in, Handle, Options, Schema, Server, CLUSTER_MASTER_KEY,
};

/// Sessions refreshed one after another by their own task during the storm.
const REFRESHED: usize = 12;
/// Sessions revoked during the storm.
const REVOKED: usize = 12;
/// Tasks creating sessions during the storm.
const CREATORS: usize = 3;
/// How long the storm runs before the kill.
const STORM: Duration = Duration::from_millis(1200);

/// What the server acknowledged (answered with success) before it died.
#[derive(Default)]
struct Ledger {
    /// Created sessions: id and access token.
    created: Vec<(String, String)>,
    /// Revoked sessions.
    revoked: Vec<String>,
    /// Refreshed sessions: id -> (acknowledged refreshes, the newest refresh token received).
    refreshed: HashMap<String, (usize, String)>,
}

fn session_id(r: &Value) -> String {
    r["session"]["id"].as_str().unwrap().to_owned()
}

async fn create(node: &Handle, user: &str) -> Option<Value> {
    let r = node
        .try_post("/v1/sessions", json!({"user_id": user, "kind": "tokens"}))
        .await?;
    assert_eq!(r.status, 201, "{}", r.text);
    Some(r.body)
}

/// Runs the storm until the server is killed; returns what was acknowledged.
async fn storm(server: Server) -> (Ledger, tempfile::TempDir) {
    let node = server.handle();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut to_refresh = Vec::new();
    for i in 0..REFRESHED {
        let body = create(&node, &format!("refresher-{i}")).await.unwrap();
        let refresh = body["tokens"]["refresh_token"].as_str().unwrap().to_owned();
        to_refresh.push((session_id(&body), refresh));
    }
    let mut to_revoke = Vec::new();
    for i in 0..REVOKED {
        to_revoke.push(session_id(
            &create(&node, &format!("revoked-{i}")).await.unwrap(),
        ));
    }
    let mut tasks = JoinSet::new();
    for c in 0..CREATORS {
        let (node, ledger) = (node.clone(), ledger.clone());
        tasks.spawn(async move {
            for n in 0.. {
                let Some(body) = create(&node, &format!("creator-{c}-{n}")).await else {
                    return;
                };
                let access = body["tokens"]["access_token"].as_str().unwrap().to_owned();
                ledger
                    .lock()
                    .unwrap()
                    .created
                    .push((session_id(&body), access));
            }
        });
    }
    for (id, mut refresh) in to_refresh {
        let (node, ledger) = (node.clone(), ledger.clone());
        ledger
            .lock()
            .unwrap()
            .refreshed
            .insert(id.clone(), (0, refresh.clone()));
        tasks.spawn(async move {
            loop {
                let Some(r) = node
                    .try_post("/v1/tokens/refresh", json!({"refresh_token": refresh}))
                    .await
                else {
                    return;
                };
                assert_eq!(r.status, 200, "{}", r.text);
                refresh = r.body["tokens"]["refresh_token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut ledger = ledger.lock().unwrap();
                let entry = ledger.refreshed.get_mut(&id).unwrap();
                *entry = (entry.0 + 1, refresh.clone());
            }
        });
    }
    {
        let (node, ledger) = (node.clone(), ledger.clone());
        let pause = STORM / u32::try_from(REVOKED).unwrap();
        tasks.spawn(async move {
            for id in to_revoke {
                let Some(r) = node
                    .try_post(&format!("/v1/sessions/{id}/revoke"), json!({}))
                    .await
                else {
                    return;
                };
                assert_eq!(r.status, 204, "{}", r.text);
                ledger.lock().unwrap().revoked.push(id);
                tokio::time::sleep(pause).await;
            }
        });
    }
    tokio::time::sleep(STORM).await;
    let (_, dir) = server.kill_keeping_dir().await;
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    (ledger, dir)
}

/// Checks the acknowledged writes against the restarted server and its database.
async fn check(server: &Server, store: &dyn Backend, ledger: &Ledger, cli_env: &[(&str, &str)]) {
    let node = server.handle();
    assert!(
        ledger.created.len() > CREATORS && ledger.revoked.len() > 1,
        "the storm acknowledged too little to mean anything: {} created, {} revoked",
        ledger.created.len(),
        ledger.revoked.len()
    );
    let audit = |id: &str| {
        let id = SessionId::parse(id).unwrap();
        async move {
            let mut query = AuditQuery::session(&id);
            query.limit = 10_000;
            store.audit_records(&query).await.unwrap()
        }
    };
    let count = |records: &[sessiond::audit::AuditRecord], event: AuditEvent| {
        records.iter().filter(|r| r.event == event).count()
    };
    // Every acknowledged create: the session is there, active, its token verifies, audited.
    for (id, access) in &ledger.created {
        let r = node.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(r.status, 200, "acknowledged session {id} lost: {}", r.text);
        assert!(r.body["session"]["revoked_at"].is_null(), "{}", r.text);
        let v = node
            .post("/v1/sessions/validate", json!({"access_token": access}))
            .await;
        assert_eq!(v.status, 200, "{}", v.text);
        assert_eq!(count(&audit(id).await, AuditEvent::SessionCreated), 1);
    }
    // Every acknowledged revocation: revoked, audited once.
    for id in &ledger.revoked {
        let r = node.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            r.body["session"]["revoked_at"].is_string(),
            "acknowledged revocation of {id} lost: {}",
            r.text
        );
        assert_eq!(count(&audit(id).await, AuditEvent::SessionRevoked), 1);
    }
    // Every refreshed session: each acknowledged refresh audited; the newest token received
    // continues the one chain, and the chain has one head.
    let mut refreshes = 0;
    for (id, (acks, newest)) in &ledger.refreshed {
        refreshes += acks;
        let records = audit(id).await;
        assert!(
            count(&records, AuditEvent::SessionRefreshed) >= *acks,
            "{id}: {acks} acknowledged refreshes, fewer audited"
        );
        let next = node
            .post("/v1/tokens/refresh", json!({"refresh_token": newest}))
            .await;
        assert_eq!(
            next.status, 200,
            "{id}: the newest token received: {}",
            next.text
        );
        let successor = next.body["tokens"]["refresh_token"].as_str().unwrap();
        let after = node
            .post("/v1/tokens/refresh", json!({"refresh_token": successor}))
            .await;
        assert_eq!(after.status, 200, "{id}: its successor: {}", after.text);
        let head = after.body["tokens"]["refresh_token"].as_str().unwrap();
        // The older token again, inside the grace window: it converges on the one head (the
        // pair already issued), it does not start a second chain.
        let again = node
            .post("/v1/tokens/refresh", json!({"refresh_token": newest}))
            .await;
        assert_eq!(again.status, 200, "{id}: {}", again.text);
        // The same refresh secret (`jti`) at the same generation; `iat` may differ by a second.
        let secret = |token: &str| {
            let claims = jwt_part(token, 1);
            (claims["gen"].clone(), claims["jti"].clone())
        };
        assert_eq!(
            secret(again.body["tokens"]["refresh_token"].as_str().unwrap()),
            secret(head),
            "{id}: a second live chain"
        );
    }
    assert!(
        refreshes > REFRESHED,
        "too few refreshes acknowledged: {refreshes}"
    );
    // The keys are whole: exactly one active key per purpose.
    let keys = cli_in(server.dir.path(), &["keys", "list"], cli_env).await;
    let listing = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.status.success(), "{listing}");
    for purpose in ["cookie", "access", "refresh"] {
        let active = listing
            .lines()
            .filter(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.get(1) == Some(&purpose) && cols.get(3) == Some(&"active")
            })
            .count();
        assert_eq!(active, 1, "{purpose}: {listing}");
    }
}

#[tokio::test]
async fn a_killed_sqlite_server_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_in(dir, Options::default()).await;
    let (ledger, dir) = storm(server).await;
    let path = dir.path().join("data").join("sessiond.db");
    let server = spawn_in(dir, Options::default()).await;
    let store = SqliteStore::open(path.to_str().unwrap(), SqliteOptions::default())
        .await
        .unwrap();
    check(&server, &store, &ledger, &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_killed_postgres_server_keeps_every_acknowledged_write() {
    let schema = Schema::new();
    let url = postgres_url();
    let options = || Options {
        config: format!(
            "database_url = \"{url}\"\ndatabase_schema = \"{}\"\n",
            schema.name
        ),
        env: vec![(
            "SESSIOND_MASTER_KEY".to_owned(),
            CLUSTER_MASTER_KEY.to_owned(),
        )],
        ..Options::default()
    };
    let server = spawn_in(tempfile::tempdir().unwrap(), options()).await;
    let (ledger, dir) = storm(server).await;
    let server = spawn_in(dir, options()).await;
    let mut pg = PgOptions::default();
    pg.schema = Some(sessiond::store::postgres::PgSchema::new(schema.name.clone()).unwrap());
    let store = PgStore::open(&url, pg).await.unwrap();
    check(
        &server,
        &store,
        &ledger,
        &[("SESSIOND_MASTER_KEY", CLUSTER_MASTER_KEY)],
    )
    .await;
    server.stop().await;
    store.close().await;
}
