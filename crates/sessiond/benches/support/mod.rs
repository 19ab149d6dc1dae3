//! What the benchmarks that reach PostgreSQL share: where it is, a fresh schema per run, and
//! dropping it afterwards.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};

/// `DATABASE_URL` when it names PostgreSQL, else the local server's `test` database.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema name for this run, named like the test fixtures' schemas so a run killed before
/// its clean-up is swept with them.
pub fn schema_name(tag: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("sessiond_t_{secs}_{}_{tag}", std::process::id())
}

/// Drops `schema` and everything in it (best effort: a failure leaves it for the sweep).
pub async fn drop_schema(schema: &str) {
    if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
        let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// The program's own arguments (`cargo bench` adds `--bench`).
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}
