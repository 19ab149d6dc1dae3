//! The embedded default in one screen: a cookie session in a SQLite file, from creation to
//! revocation.
//!
//! ```sh
//! cargo run --release --example quickstart            # uses ./sessiond-data/quickstart.db
//! cargo run --release --example quickstart -- my.db   # or a file of your choice
//! ```
//!
//! It prints each step. Secrets (the cookie value, the CSRF token, the master key) are shown
//! only as their length: a real application hands them to the browser, never to a log.

use std::sync::Arc;

use sessiond::store::sqlite::{SqliteOptions, SqliteStore};
use sessiond::{
    MasterKey, NewSession, OsRandom, RequestContext, RevokeReason, SessionService, UserId,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sessiond-data/quickstart.db".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The master key seals signing keys at rest. A real deployment keeps it in
    // SESSIOND_MASTER_KEY; without it this demo makes a throw-away key and starts a fresh file
    // (keys sealed under an earlier throw-away key could not be opened).
    let master = match std::env::var("SESSIOND_MASTER_KEY") {
        Ok(text) => MasterKey::from_base64(&text)?,
        Err(_) => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            println!("0. SESSIOND_MASTER_KEY unset: throw-away master key, fresh database");
            MasterKey::generate(&OsRandom)
        }
    };
    let store = SqliteStore::open(&path, SqliteOptions::default()).await?;
    println!("1. opened SQLite store at {path} (migrations applied, WAL on)");
    let service = SessionService::builder(Arc::new(store), master)
        .start()
        .await?;
    for key in service.keys().list().await? {
        println!(
            "2. active {} key {} ({})",
            key.purpose, key.id, key.algorithm
        );
    }

    let created = service
        .create_cookie_session(NewSession::new(UserId::new("alice")?).ip("203.0.113.7"))
        .await?;
    let s = &created.session;
    println!(
        "3. created session {} for {}: idle until {}, absolute until {}",
        s.id, s.user_id, s.idle_expires_at, s.absolute_expires_at
    );
    println!(
        "   cookie value: {} bytes (v1.<session>.<key>.<mac>); CSRF token: {} bytes",
        created.cookie.expose().len(),
        created.csrf_token.expose().len()
    );

    let ctx = RequestContext::default().csrf(created.csrf_token.expose());
    let ok = service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await?;
    println!(
        "4. validated with CSRF: user {}, deadline {}",
        ok.session.user_id, ok.deadline
    );

    let new_csrf = service.rotate_csrf(&s.id).await?;
    let stale = service.validate_cookie(created.cookie.expose(), &ctx).await;
    println!(
        "5. rotated CSRF; the old token now fails with {:?}",
        stale.err().map(|e| e.code())
    );
    let ctx = RequestContext::default().csrf(new_csrf.expose());
    service
        .validate_cookie(created.cookie.expose(), &ctx)
        .await?;
    println!("   the new token validates");

    let outcome = service.revoke(&s.id, &RevokeReason::logout()).await?;
    println!("6. revoked: {outcome:?}");
    let after = service
        .validate_cookie(created.cookie.expose(), &RequestContext::default())
        .await;
    println!(
        "7. validation after revoke fails with {:?}",
        after.err().map(|e| e.code())
    );

    let trail = service
        .audit_records(&sessiond::audit::AuditQuery::session(&s.id))
        .await?;
    println!("8. audit trail of the session (newest first):");
    for r in trail {
        println!("   {} {} {}", r.at, r.event, r.reason);
    }
    Ok(())
}
