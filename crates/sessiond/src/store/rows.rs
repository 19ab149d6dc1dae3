//! The SQL row layer shared by the SQLite and PostgreSQL backends.
//!
//! Written once, generic over sqlx's row and query types: how a session, key, audit or API-key
//! row decodes into a domain value ([`Columns`] and the `*_from_row` functions), how a record
//! becomes bind parameters ([`Bind`]), and how a driver error is classified ([`classify`], fed
//! by each dialect's table of error codes). The dialects keep only their SQL text, their
//! connections and their table of codes, so a defect in a stored row is reported the same way
//! by both (`StoreError::Corrupt` naming `table.column`), whatever the defect.

use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

use super::{ApiKeyRecord, ApiKeyScope, ClaimOutcome, Revocation, SessionOwner, StoreError};
use crate::audit::{AuditEvent, AuditQuery, AuditRecord};
use crate::clock::Timestamp;
use crate::id::{ApiKeyId, KeyId, SessionId, Tenant, UserId};
use crate::keys::{Fingerprint, KeyAlgorithm, KeyOrigin, KeyPurpose, KeyRecord};
use crate::session::{
    RefreshState, RefreshStep, RevokeReason, Session, SessionKind, SessionRecord,
};

/// The columns of a session row, in the order [`Bind::session`] binds them.
macro_rules! session_columns {
    () => {
        "id, user_id, tenant, kind, created_at, last_seen_at, idle_expires_at, \
         absolute_expires_at, revoked_at, revoke_reason, key_id, csrf_hash, refresh_hash, \
         refresh_generation, refresh_used, refresh_chain, ip, user_agent, claims"
    };
}

/// The columns [`owner_from_row`] reads (what a lifecycle change returns).
macro_rules! owner_columns {
    () => {
        "id, user_id, tenant"
    };
}

/// The columns of a signing-key row, as [`key_from_row`] reads them.
macro_rules! key_columns {
    () => {
        "id, purpose, algorithm, created_at, retired_at, verify_until, public_key, sealed, \
         origin, fingerprint"
    };
}

/// The columns of an audit row, in the order [`Bind::audit`] binds them.
macro_rules! audit_columns {
    () => {
        "at, event, reason, session_id, user_id, tenant, key_id, ip"
    };
}

/// The columns of an API-key row, in the order [`Bind::api_key`] binds them.
macro_rules! api_key_columns {
    () => {
        "id, name, hash, created_at, revoked_at, scope"
    };
}

pub(super) use {api_key_columns, audit_columns, key_columns, owner_columns, session_columns};

/// A query with its dialect's arguments, as `sqlx::query` builds it.
pub(super) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// Classifies a driver error: transport failures (I/O, TLS, pool timed out or closed, worker
/// gone) and database errors whose code `unavailable` accepts are [`StoreError::Unavailable`]
/// (the backend cannot serve now; nothing is wrong with the statement), everything else is
/// [`StoreError::Backend`]. `unavailable` is the dialect's table of codes.
pub(super) fn classify(e: sqlx::Error, unavailable: fn(&str) -> bool) -> StoreError {
    if is_unavailable(&e, unavailable) {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}

/// Whether `e` means "cannot reach or cannot serve now" (see [`classify`]).
pub(super) fn is_unavailable(e: &sqlx::Error, unavailable: fn(&str) -> bool) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable(&c)),
        _ => false,
    }
}

/// Reads the columns of a row by name, for any sqlx row type.
///
/// Columns are named `table.column`: the row is asked for the part after the dot, and a value
/// that does not decode (wrong type, unexpected NULL) is [`StoreError::Corrupt`] with the whole
/// name. Asking for a column the statement did not select is our bug, not the row's:
/// [`StoreError::Backend`].
pub(super) trait Columns {
    /// A non-null integer.
    fn int(&self, col: &'static str) -> Result<i64, StoreError>;
    /// A nullable integer.
    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, StoreError>;
    /// A non-null text.
    fn text(&self, col: &'static str) -> Result<String, StoreError>;
    /// A nullable text.
    fn opt_text(&self, col: &'static str) -> Result<Option<String>, StoreError>;
    /// A non-null blob.
    fn bytes(&self, col: &'static str) -> Result<Vec<u8>, StoreError>;
    /// A nullable blob.
    fn opt_bytes(&self, col: &'static str) -> Result<Option<Vec<u8>>, StoreError>;
    /// A non-null boolean.
    fn boolean(&self, col: &'static str) -> Result<bool, StoreError>;
}

impl<R> Columns for R
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, col: &'static str) -> Result<i64, StoreError> {
        get(self, col)
    }

    fn opt_int(&self, col: &'static str) -> Result<Option<i64>, StoreError> {
        get(self, col)
    }

    fn text(&self, col: &'static str) -> Result<String, StoreError> {
        get(self, col)
    }

    fn opt_text(&self, col: &'static str) -> Result<Option<String>, StoreError> {
        get(self, col)
    }

    fn bytes(&self, col: &'static str) -> Result<Vec<u8>, StoreError> {
        get(self, col)
    }

    fn opt_bytes(&self, col: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self, col)
    }

    fn boolean(&self, col: &'static str) -> Result<bool, StoreError> {
        get(self, col)
    }
}

fn get<'r, R, T>(row: &'r R, col: &'static str) -> Result<T, StoreError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    let name = col.split_once('.').map_or(col, |(_, name)| name);
    row.try_get(name).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt { what: col }
        }
        other => StoreError::Backend(Box::new(other)),
    })
}

/// Maps any failure to make a domain value of column `col` to [`StoreError::Corrupt`].
fn corrupt<E>(col: &'static str) -> impl FnOnce(E) -> StoreError {
    move |_| StoreError::Corrupt { what: col }
}

/// Decoding helpers over [`Columns`]: each reports a defect of any kind in `col` as
/// [`StoreError::Corrupt`] naming `col`.
trait Decoded: Columns {
    /// The text of `col` made into a `T` by `make`.
    fn parsed<T, E>(
        &self,
        col: &'static str,
        make: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        make(self.text(col)?).map_err(corrupt(col))
    }

    /// The text of nullable `col` made into a `T` by `make`.
    fn opt_parsed<T, E>(
        &self,
        col: &'static str,
        make: impl FnOnce(String) -> Result<T, E>,
    ) -> Result<Option<T>, StoreError> {
        self.opt_text(col)?
            .map(make)
            .transpose()
            .map_err(corrupt(col))
    }

    fn timestamp(&self, col: &'static str) -> Result<Timestamp, StoreError> {
        self.int(col).map(Timestamp::from_unix_millis)
    }

    fn opt_timestamp(&self, col: &'static str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_int(col)?.map(Timestamp::from_unix_millis))
    }

    /// A nullable SHA-256 hash: 32 bytes when present.
    fn opt_hash(&self, col: &'static str) -> Result<Option<[u8; 32]>, StoreError> {
        self.opt_bytes(col)?
            .map(<[u8; 32]>::try_from)
            .transpose()
            .map_err(corrupt(col))
    }

    /// A SHA-256 hash: 32 bytes.
    fn hash(&self, col: &'static str) -> Result<[u8; 32], StoreError> {
        <[u8; 32]>::try_from(self.bytes(col)?).map_err(corrupt(col))
    }
}

impl<R: Columns> Decoded for R {}

/// A session row (every column of [`session_columns!`]).
pub(super) fn session_from_row(row: &impl Columns) -> Result<SessionRecord, StoreError> {
    let session = Session {
        id: row.parsed("sessions.id", |s| SessionId::parse(&s))?,
        user_id: row.parsed("sessions.user_id", UserId::new)?,
        tenant: row.parsed("sessions.tenant", Tenant::new)?,
        kind: row.parsed("sessions.kind", |s| SessionKind::parse(&s).ok_or(()))?,
        created_at: row.timestamp("sessions.created_at")?,
        last_seen_at: row.timestamp("sessions.last_seen_at")?,
        idle_expires_at: row.timestamp("sessions.idle_expires_at")?,
        absolute_expires_at: row.timestamp("sessions.absolute_expires_at")?,
        revoked_at: row.opt_timestamp("sessions.revoked_at")?,
        revoke_reason: row.opt_parsed("sessions.revoke_reason", |r| RevokeReason::new(&r))?,
        ip: row.opt_text("sessions.ip")?,
        user_agent: row.opt_text("sessions.user_agent")?,
        claims: row.parsed("sessions.claims", |c| serde_json::from_str(&c))?,
    };
    let refresh = match row.opt_hash("sessions.refresh_hash")? {
        Some(hash) => Some(RefreshState {
            hash,
            generation: u64::try_from(row.int("sessions.refresh_generation")?)
                .map_err(corrupt("sessions.refresh_generation"))?,
            used: row.boolean("sessions.refresh_used")?,
            chain: row.parsed("sessions.refresh_chain", |c| {
                RefreshStep::decode_chain(&c).ok_or(())
            })?,
        }),
        None => None,
    };
    Ok(SessionRecord {
        session,
        key_id: row.parsed("sessions.key_id", |k| KeyId::parse(&k))?,
        csrf_hash: row.opt_hash("sessions.csrf_hash")?,
        refresh,
    })
}

/// Whose a changed session is (the columns of [`owner_columns!`], as `RETURNING` gives them).
pub(super) fn owner_from_row(row: &impl Columns) -> Result<SessionOwner, StoreError> {
    Ok(SessionOwner {
        id: row.parsed("sessions.id", |s| SessionId::parse(&s))?,
        user_id: row.parsed("sessions.user_id", UserId::new)?,
        tenant: row.parsed("sessions.tenant", Tenant::new)?,
    })
}

/// The public view of session rows (every column of [`session_columns!`]).
pub(super) fn sessions_from_rows(rows: &[impl Columns]) -> Result<Vec<Session>, StoreError> {
    rows.iter()
        .map(|row| session_from_row(row).map(|record| record.session))
        .collect()
}

/// What a revoke did: `revoked` is the row the revoking statement returned (the columns of
/// [`owner_columns!`]), if it revoked anything; `found` whether the session exists.
pub(super) fn revocation(
    revoked: Option<&impl Columns>,
    found: bool,
) -> Result<Revocation, StoreError> {
    Ok(match revoked {
        Some(row) => Revocation::Revoked(owner_from_row(row)?),
        None if found => Revocation::AlreadyRevoked,
        None => Revocation::NotFound,
    })
}

/// What a claim's insert-if-absent did, from the rows it wrote.
pub(super) fn claim_outcome(rows_affected: u64) -> ClaimOutcome {
    if rows_affected == 1 {
        ClaimOutcome::Claimed
    } else {
        ClaimOutcome::AlreadyUsed
    }
}

/// How many audit records `query` reads (0 means the default, 100).
pub(super) fn audit_limit(query: &AuditQuery) -> i64 {
    i64::from(if query.limit == 0 { 100 } else { query.limit })
}

/// A signing-key row (the columns of [`key_columns!`]). An operator key has a fingerprint and
/// a generated one none; anything else is corrupt.
pub(super) fn key_from_row(row: &impl Columns) -> Result<KeyRecord, StoreError> {
    let origin = row.parsed("signing_keys.origin", |o| KeyOrigin::parse(&o))?;
    let fingerprint = key_fingerprint(row)?;
    if (origin == KeyOrigin::Operator) != fingerprint.is_some() {
        return Err(StoreError::Corrupt {
            what: "signing_keys.fingerprint",
        });
    }
    Ok(KeyRecord {
        id: row.parsed("signing_keys.id", |k| KeyId::parse(&k))?,
        purpose: row.parsed("signing_keys.purpose", |p| KeyPurpose::parse(&p))?,
        algorithm: row.parsed("signing_keys.algorithm", |a| KeyAlgorithm::parse(&a))?,
        created_at: row.timestamp("signing_keys.created_at")?,
        retired_at: row.opt_timestamp("signing_keys.retired_at")?,
        verify_until: row.opt_timestamp("signing_keys.verify_until")?,
        public_key: row.opt_bytes("signing_keys.public_key")?,
        sealed: row.bytes("signing_keys.sealed")?,
        origin,
        fingerprint,
    })
}

/// The `fingerprint` column of a signing-key row (also what the statements that retire a key
/// return): 32 bytes when present.
pub(super) fn key_fingerprint(row: &impl Columns) -> Result<Option<Fingerprint>, StoreError> {
    Ok(row
        .opt_hash("signing_keys.fingerprint")?
        .map(Fingerprint::from_bytes))
}

/// An audit row (the columns of [`audit_columns!`]).
pub(super) fn audit_from_row(row: &impl Columns) -> Result<AuditRecord, StoreError> {
    let mut record = AuditRecord::new(
        row.timestamp("audit_log.at")?,
        row.parsed("audit_log.event", |e| AuditEvent::parse(&e).ok_or(()))?,
        row.text("audit_log.reason")?,
    );
    record.session_id = row.opt_parsed("audit_log.session_id", |s| SessionId::parse(&s))?;
    record.user_id = row.opt_parsed("audit_log.user_id", UserId::new)?;
    record.tenant = row.opt_parsed("audit_log.tenant", Tenant::new)?;
    record.key_id = row.opt_parsed("audit_log.key_id", |k| KeyId::parse(&k))?;
    record.ip = row.opt_text("audit_log.ip")?;
    Ok(record)
}

/// An API-key row (the columns of [`api_key_columns!`]).
pub(super) fn api_key_from_row(row: &impl Columns) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.parsed("api_keys.id", |k| ApiKeyId::parse(&k))?,
        name: row.text("api_keys.name")?,
        hash: row.hash("api_keys.hash")?,
        created_at: row.timestamp("api_keys.created_at")?,
        revoked_at: row.opt_timestamp("api_keys.revoked_at")?,
        scope: row.parsed("api_keys.scope", |s| ApiKeyScope::parse(&s).ok_or(()))?,
    })
}

/// A time as stored: Unix milliseconds.
pub(super) fn millis(t: Timestamp) -> i64 {
    t.unix_millis()
}

/// A refresh generation as stored (a signed 64-bit integer in both dialects).
///
/// # Errors
/// [`StoreError::Corrupt`] for a generation beyond `i64::MAX`, which no row can hold.
pub(super) fn generation(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation).map_err(corrupt("sessions.refresh_generation"))
}

/// A session record's values as stored, computed once for either dialect: what
/// [`Bind::session`] binds. It borrows the record, or owns it where the statement runs later
/// elsewhere (SQLite's group commit, `sqlite_batch`).
#[derive(Debug)]
pub(super) struct SessionParams<'a> {
    record: std::borrow::Cow<'a, SessionRecord>,
    generation: i64,
    chain: String,
    claims: String,
}

impl<'a> SessionParams<'a> {
    /// The stored values of `record`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the claims do not serialize or the refresh generation is
    /// beyond what a row holds.
    pub(super) fn new(record: std::borrow::Cow<'a, SessionRecord>) -> Result<Self, StoreError> {
        let refresh = record.refresh.as_ref();
        Ok(SessionParams {
            generation: generation(refresh.map_or(0, |r| r.generation))?,
            chain: RefreshStep::encode_chain(refresh.map_or(&[][..], |r| r.chain.as_slice())),
            claims: serde_json::to_string(&record.session.claims)
                .map_err(corrupt("sessions.claims"))?,
            record,
        })
    }
}

/// Binds a record's columns to a query, in the order of its `*_columns!` list.
pub(super) trait Bind<'q>: Sized {
    /// Every column of [`session_columns!`].
    fn session(self, params: &'q SessionParams<'q>) -> Self;
    /// `id, purpose, algorithm, created_at, public_key, sealed, origin, fingerprint` (an insert
    /// leaves `retired_at` and `verify_until` NULL: a new key is active).
    fn new_key(self, key: &'q KeyRecord) -> Self;
    /// Every column of [`audit_columns!`].
    fn audit(self, record: &'q AuditRecord) -> Self;
    /// Every column of [`api_key_columns!`].
    fn api_key(self, key: &'q ApiKeyRecord) -> Self;
}

impl<'q, DB> Bind<'q> for Query<'q, DB>
where
    DB: Database,
    i64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    &'q [u8]: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB>,
    Option<&'q str>: Encode<'q, DB>,
    Option<&'q [u8]>: Encode<'q, DB>,
{
    fn session(self, p: &'q SessionParams<'q>) -> Self {
        let (s, refresh) = (&p.record.session, p.record.refresh.as_ref());
        self.bind(s.id.as_str())
            .bind(s.user_id.as_str())
            .bind(s.tenant.as_str())
            .bind(s.kind.as_str())
            .bind(millis(s.created_at))
            .bind(millis(s.last_seen_at))
            .bind(millis(s.idle_expires_at))
            .bind(millis(s.absolute_expires_at))
            .bind(s.revoked_at.map(millis))
            .bind(s.revoke_reason.as_ref().map(RevokeReason::as_str))
            .bind(p.record.key_id.as_str())
            .bind(p.record.csrf_hash.as_ref().map(|h| h.as_slice()))
            .bind(refresh.map(|r| r.hash.as_slice()))
            .bind(p.generation)
            .bind(refresh.is_some_and(|r| r.used))
            .bind(p.chain.as_str())
            .bind(s.ip.as_deref())
            .bind(s.user_agent.as_deref())
            .bind(p.claims.as_str())
    }

    fn new_key(self, key: &'q KeyRecord) -> Self {
        self.bind(key.id.as_str())
            .bind(key.purpose.as_str())
            .bind(key.algorithm.as_str())
            .bind(millis(key.created_at))
            .bind(key.public_key.as_deref())
            .bind(key.sealed.as_slice())
            .bind(key.origin.as_str())
            .bind(key.fingerprint.as_ref().map(|f| f.as_bytes().as_slice()))
    }

    fn audit(self, r: &'q AuditRecord) -> Self {
        self.bind(millis(r.at))
            .bind(r.event.as_str())
            .bind(r.reason.as_str())
            .bind(r.session_id.as_ref().map(SessionId::as_str))
            .bind(r.user_id.as_ref().map(UserId::as_str))
            .bind(r.tenant.as_ref().map(Tenant::as_str))
            .bind(r.key_id.as_ref().map(KeyId::as_str))
            .bind(r.ip.as_deref())
    }

    fn api_key(self, key: &'q ApiKeyRecord) -> Self {
        self.bind(key.id.as_str())
            .bind(key.name.as_str())
            .bind(key.hash.as_slice())
            .bind(millis(key.created_at))
            .bind(key.revoked_at.map(millis))
            .bind(key.scope.as_str())
    }
}
