//! The store traits implemented once for both SQL dialects.
//!
//! [`sql_store!`] expands to the `SessionStore`, `ClaimStore`, `KeyStore`, `AuditStore` and
//! `ApiKeyStore` impls of a dialect's store, and its `open`. Everything but the SQL text is the
//! same for SQLite and PostgreSQL: binding (in the order each [`Statements`] field documents),
//! decoding (`super::rows`) and outcomes. A dialect supplies its [`Statements`], its
//! connections, `connect` and `migrate`, a `map_err` (its error table) in scope, and the two
//! steps whose atomicity it gets differently:
//! - `begin_serialized(lock)`: a transaction that every other transaction begun with the same
//!   `lock` parts waits for (a PostgreSQL advisory lock; SQLite's single writer connection
//!   already serializes). Its first statement must write, for SQLite. Session creates under a
//!   limit lock `["sessions", user, tenant]`, key changes `["signing_keys", purpose]`;
//! - `revoke_one(revoke, id)`: runs the bound `revoke_one` statement and tells a revoked
//!   session from one that was already revoked or never existed;
//! - `append_audit_record(record)`: one audit record (PostgreSQL: its own statement,
//!   `append_audit_alone`; SQLite: grouped with concurrent writes, `sqlite_batch`);
//! - `write_one(statement)`: one hot single-statement write, the rows it changed (PostgreSQL:
//!   its own statement on the pool; SQLite: grouped with concurrent ones, `sqlite_batch`);
//! - `session_row(id)`: the session row by id, the read of every validation (the row cache,
//!   else PostgreSQL: the read pool, `session_row_pooled`; SQLite: a synchronous connection,
//!   see `sqlite`), and `session_row_current(id)`, the same read past the cache;
//! - `session_write(scope, write)`: runs a session write (an owned future, so it can outlive
//!   its caller: its value and, when it can say, the rows it changed) and then makes every
//!   cached copy of those rows (`scope` when it cannot say) forget them: SQLite's row cache
//!   through a `row_cache::Written` guard, which forgets again after the writer drains when
//!   the caller gave up mid-write; PostgreSQL's on every node (`pg_lease`), the write and its
//!   announcement running as a task of their own that a caller who gives up does not stop.
//!
//! The dialect's store has a field `rows: Option<Arc<row_cache::RowCache>>` (its row cache,
//! `None` when off), whose counters `cache_stats` reports.

/// A write statement's run on a connection: how many rows it changed. The hot single-statement
/// writes are handed to the dialect's `write_one` as a closure returning this, so SQLite can
/// run them in a batch (`sqlite_batch`) and PostgreSQL on its pool.
pub(super) type WriteFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, sqlx::Error>> + Send + 'c>>;

/// The SQL text of one dialect. Each statement's parameters are bound in the order given.
#[derive(Debug)]
pub(super) struct Statements {
    /// Insert a session row (`session_columns!`): `Bind::session`.
    pub insert_session: &'static str,
    /// Evict the user's active sessions beyond the newest `max` (the new one counts as newest),
    /// returning their owners: `now`, `user`, `tenant`, `new_id`, `max`.
    pub evict: &'static str,
    /// Revoke one active session, returning its owner (for PostgreSQL also whether it exists):
    /// `at`, `reason`, `id`.
    pub revoke_one: &'static str,
    /// The session row (`session_columns!`) by id: `id`.
    pub session: &'static str,
    /// Conditional touch: `last_seen_at`, `idle_expires_at`, `id`, `seen_before`.
    pub touch: &'static str,
    /// Revoke-all returning owners: `at`, `reason`, `user`, `tenant?`, `except?`.
    pub revoke_user: &'static str,
    /// Active sessions of a user: `user`, `tenant?`, `now`.
    pub user_sessions: &'static str,
    /// CSRF replace if active, returning the owner: `hash`, `id`, `now`.
    pub set_csrf: &'static str,
    /// GC of sessions: `now`, `limit`.
    pub delete_expired_sessions: &'static str,
    /// Refresh compare-and-swap: `new_hash`, `generation`, `chain`, `now`, `idle_expires_at`,
    /// `id`, `expected_hash`, `only_if_unused`.
    pub rotate_refresh: &'static str,
    /// First use of a pair: `id`, `generation`.
    pub mark_refresh_used: &'static str,
    /// Claim insert-if-absent-or-expired: `id`, `expires_at`, `now`.
    pub claim: &'static str,
    /// GC of claims: `now`, `limit`.
    pub delete_expired_claims: &'static str,
    /// Insert as the purpose's first active key, nothing if it has one: `Bind::new_key`.
    pub insert_first_key: &'static str,
    /// Retire the purpose's active key (only if its id is `expected`, when given), returning
    /// its `id` and `fingerprint`: `retired_at`, `verify_until`, `purpose`, `expected?`.
    pub retire_key: &'static str,
    /// End an active key at once, returning its `fingerprint`: `at`, `id`, `purpose`.
    pub end_active_key: &'static str,
    /// End a retired key that still verifies after `at`, returning its `fingerprint`: `at`,
    /// `id`, `purpose`.
    pub end_retired_key: &'static str,
    /// Whether a key exists: `id`, `purpose`.
    pub key_exists: &'static str,
    /// Record an active generated key as an operator key: `fingerprint`, `id`.
    pub record_operator_key: &'static str,
    /// Record retired operator material, nothing if recorded: `fingerprint`, `purpose`,
    /// `key_id`, `retired_at`.
    pub record_retired_fingerprint: &'static str,
    /// The key id recorded for retired operator material: `fingerprint`.
    pub retired_operator_key: &'static str,
    /// Insert a new active key: `Bind::new_key`.
    pub insert_key: &'static str,
    /// GC of keys: `now`, `limit`.
    pub delete_expired_keys: &'static str,
    /// Append an audit record: `Bind::audit`.
    pub append_audit: &'static str,
    /// Audit records newest first: `session_id?`, `user_id?`, `limit`.
    pub audit_records: &'static str,
    /// Insert an API key: `Bind::api_key`.
    pub insert_api_key: &'static str,
    /// An API key by hash: `hash`.
    pub api_key_by_hash: &'static str,
    /// Every API key, oldest first.
    pub api_keys: &'static str,
    /// Revoke an API key once: `at`, `id`.
    pub revoke_api_key: &'static str,
}

/// Every key (`key_columns!`): the same text in both dialects.
pub(super) const KEYS: &str = concat!(
    "SELECT ",
    super::rows::key_columns!(),
    " FROM signing_keys ORDER BY created_at, id"
);

/// A hot write in [`sql_store!`]: `$query`, a statement built inside from values moved in,
/// run on the connection `$conn` that the dialect's `write_one` hands it (SQLite: in a batch);
/// the rows it changed.
macro_rules! hot_write {
    ($store:expr, |$conn:ident| $query:expr) => {
        $store.write_one(move |$conn| {
            Box::pin(async move { Ok($query.execute($conn).await?.rows_affected()) })
        })
    };
}
pub(super) use hot_write;

/// Implements the store traits for `$store` with the statements `$sql`, reading through the
/// pool `self.$read` and writing through `self.$write` of the sqlx database `$db`; `$options`
/// is the type `connect` takes (see the module documentation for what the dialect must have in
/// scope).
macro_rules! sql_store {
    ($store:ty, $sql:path, $db:ty, $options:ty, read: $read:ident, write: $write:ident) => {
        impl $store {
            /// Connects ([`Self::connect`]) and applies pending migrations ([`Self::migrate`]).
            ///
            /// # Errors
            /// As [`Self::connect`] and [`Self::migrate`].
            pub async fn open(
                url: &str,
                options: $options,
            ) -> Result<Self, $crate::store::StoreError> {
                let store = Self::connect(url, options).await?;
                store.migrate().await?;
                Ok(store)
            }

            /// The session row by id, through the read pool (the dialect's `session_row` may
            /// take a faster path and fall back to this one).
            async fn session_row_pooled(
                &self,
                id: &$crate::id::SessionId,
            ) -> Result<Option<$crate::session::SessionRecord>, $crate::store::StoreError> {
                let row = sqlx::query($sql.session)
                    .bind(id.as_str())
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(map_err)?;
                row.as_ref()
                    .map($crate::store::rows::session_from_row)
                    .transpose()
            }

            /// One audit record in its own statement on the write pool (the dialect's
            /// `append_audit_record` may group concurrent records instead).
            #[allow(dead_code)]
            async fn append_audit_alone(
                &self,
                record: &$crate::audit::AuditRecord,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::rows::Bind as _;
                sqlx::query($sql.append_audit)
                    .audit(record)
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            /// Garbage collection: runs `sql` (`now`, `limit`), returning how many rows it
            /// deleted.
            async fn delete_expired(
                &self,
                sql: &'static str,
                now: $crate::clock::Timestamp,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query(sql)
                    .bind($crate::store::rows::millis(now))
                    .bind(i64::from(limit))
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            }

            /// Records the fingerprint of operator key material that `row`, key `key_id` that
            /// just stopped signing, carried, so the same material is never installed again.
            async fn record_retired(
                tx: &mut sqlx::Transaction<'static, $db>,
                row: &<$db as sqlx::Database>::Row,
                purpose: $crate::keys::KeyPurpose,
                key_id: &str,
                at: $crate::clock::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                let Some(fp) = $crate::store::rows::key_fingerprint(row)? else {
                    return Ok(());
                };
                sqlx::query($sql.record_retired_fingerprint)
                    .bind(fp.as_bytes().as_slice())
                    .bind(purpose.as_str())
                    .bind(key_id)
                    .bind($crate::store::rows::millis(at))
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::SessionStore for $store {
            async fn create_session(
                &self,
                record: &$crate::session::SessionRecord,
                max_active: Option<u32>,
                now: $crate::clock::Timestamp,
            ) -> Result<Vec<$crate::store::SessionOwner>, $crate::store::StoreError> {
                use $crate::store::row_cache::Scope;
                use $crate::store::rows::Bind as _;
                let s = &record.session;
                // A new row is not cached; evictions change others (those it returns). A record
                // that cannot be stored is refused here, with its own error, before anything is
                // written; the write takes its own copy of the values.
                let params = $crate::store::rows::SessionParams::new(std::borrow::Cow::Owned(
                    record.clone(),
                ))?;
                let Some(max) = max_active else {
                    // No limit, nothing to count: one statement, a hot write.
                    let this = self.clone();
                    return self
                        .session_write(Scope::One(s.id.clone()), async move {
                            $crate::store::sql::hot_write!(this, |conn| sqlx::query(
                                $sql.insert_session
                            )
                            .session(&params))
                            .await?;
                            Ok((Vec::new(), $crate::store::row_cache::Changed::Nothing))
                        })
                        .await;
                };
                let (this, id) = (self.clone(), s.id.clone());
                let (user, tenant) = (s.user_id.clone(), s.tenant.clone());
                self.session_write(Scope::All, async move {
                    let insert = sqlx::query($sql.insert_session).session(&params);
                    // The insert and the eviction in one transaction, creates of the same user
                    // and tenant taking turns: a session that does not exist yet cannot be
                    // row-locked, and two concurrent creates that each inserted and then counted
                    // would both miss the other's uncommitted row and keep one session too many.
                    let mut tx = this
                        .begin_serialized(&["sessions", user.as_str(), tenant.as_str()])
                        .await?;
                    insert.execute(&mut *tx).await.map_err(map_err)?;
                    let evicted = sqlx::query($sql.evict)
                        .bind($crate::store::rows::millis(now))
                        .bind(user.as_str())
                        .bind(tenant.as_str())
                        .bind(id.as_str())
                        .bind(i64::from(max))
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    tx.commit().await.map_err(map_err)?;
                    let evicted = evicted
                        .iter()
                        .map($crate::store::rows::owner_from_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    let changed = evicted.iter().map(|o| o.id.clone()).collect();
                    Ok((evicted, $crate::store::row_cache::Changed::Rows(changed)))
                })
                .await
            }

            async fn session(
                &self,
                id: &$crate::id::SessionId,
            ) -> Result<Option<$crate::session::SessionRecord>, $crate::store::StoreError> {
                self.session_row(id).await
            }

            async fn session_current(
                &self,
                id: &$crate::id::SessionId,
            ) -> Result<Option<$crate::session::SessionRecord>, $crate::store::StoreError> {
                self.session_row_current(id).await
            }

            async fn touch_session(
                &self,
                id: &$crate::id::SessionId,
                last_seen_at: $crate::clock::Timestamp,
                idle_expires_at: $crate::clock::Timestamp,
                seen_before: $crate::clock::Timestamp,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::rows::millis;
                let (last_seen_at, idle_expires_at, seen_before) = (
                    millis(last_seen_at),
                    millis(idle_expires_at),
                    millis(seen_before),
                );
                let (this, id_text) = (self.clone(), id.as_str().to_owned());
                let scope = $crate::store::row_cache::Scope::One(id.clone());
                self.session_write(scope, async move {
                    let changed =
                        $crate::store::sql::hot_write!(this, |conn| sqlx::query($sql.touch)
                            .bind(last_seen_at)
                            .bind(idle_expires_at)
                            .bind(id_text.as_str())
                            .bind(seen_before))
                        .await?;
                    // A touch that changed nothing found another caller's touch first.
                    Ok((
                        changed == 1,
                        $crate::store::row_cache::Changed::unless(changed == 0),
                    ))
                })
                .await
            }

            async fn revoke_session(
                &self,
                id: &$crate::id::SessionId,
                at: $crate::clock::Timestamp,
                reason: &$crate::session::RevokeReason,
            ) -> Result<$crate::store::Revocation, $crate::store::StoreError> {
                let (this, id, reason) = (self.clone(), id.clone(), reason.clone());
                let scope = $crate::store::row_cache::Scope::One(id.clone());
                self.session_write(scope, async move {
                    let revoke = sqlx::query($sql.revoke_one)
                        .bind($crate::store::rows::millis(at))
                        .bind(reason.as_str())
                        .bind(id.as_str());
                    let revocation = this.revoke_one(revoke, &id).await?;
                    // Already revoked or missing: this call changed no row, and any copy that
                    // says otherwise is stale.
                    let changed = $crate::store::row_cache::Changed::unless(!matches!(
                        revocation,
                        $crate::store::Revocation::Revoked(_)
                    ));
                    Ok((revocation, changed))
                })
                .await
            }

            async fn revoke_user_sessions(
                &self,
                user: &$crate::id::UserId,
                tenant: Option<&$crate::id::Tenant>,
                except: Option<&$crate::id::SessionId>,
                at: $crate::clock::Timestamp,
                reason: &$crate::session::RevokeReason,
            ) -> Result<Vec<$crate::store::SessionOwner>, $crate::store::StoreError> {
                let this = self.clone();
                let (user, tenant) = (user.clone(), tenant.cloned());
                let (except, reason) = (except.cloned(), reason.clone());
                self.session_write($crate::store::row_cache::Scope::All, async move {
                    let rows = sqlx::query($sql.revoke_user)
                        .bind($crate::store::rows::millis(at))
                        .bind(reason.as_str())
                        .bind(user.as_str())
                        .bind(tenant.as_ref().map($crate::id::Tenant::as_str))
                        .bind(except.as_ref().map($crate::id::SessionId::as_str))
                        .fetch_all(&this.$write)
                        .await
                        .map_err(map_err)?;
                    let revoked = rows
                        .iter()
                        .map($crate::store::rows::owner_from_row)
                        .collect::<Result<Vec<_>, _>>()?;
                    let changed = revoked.iter().map(|o| o.id.clone()).collect();
                    Ok((revoked, $crate::store::row_cache::Changed::Rows(changed)))
                })
                .await
            }

            async fn user_sessions(
                &self,
                user: &$crate::id::UserId,
                tenant: Option<&$crate::id::Tenant>,
                now: $crate::clock::Timestamp,
            ) -> Result<Vec<$crate::session::Session>, $crate::store::StoreError> {
                let rows = sqlx::query($sql.user_sessions)
                    .bind(user.as_str())
                    .bind(tenant.map($crate::id::Tenant::as_str))
                    .bind($crate::store::rows::millis(now))
                    .fetch_all(&self.$read)
                    .await
                    .map_err(map_err)?;
                $crate::store::rows::sessions_from_rows(&rows)
            }

            async fn set_csrf_hash(
                &self,
                id: &$crate::id::SessionId,
                hash: &[u8; 32],
                now: $crate::clock::Timestamp,
            ) -> Result<Option<$crate::store::SessionOwner>, $crate::store::StoreError> {
                let (this, id, hash) = (self.clone(), id.clone(), *hash);
                let scope = $crate::store::row_cache::Scope::One(id.clone());
                self.session_write(scope, async move {
                    let row = sqlx::query($sql.set_csrf)
                        .bind(hash.as_slice())
                        .bind(id.as_str())
                        .bind($crate::store::rows::millis(now))
                        .fetch_optional(&this.$write)
                        .await
                        .map_err(map_err)?;
                    let owner = row
                        .as_ref()
                        .map($crate::store::rows::owner_from_row)
                        .transpose()?;
                    let changed = $crate::store::row_cache::Changed::unless(owner.is_none());
                    Ok((owner, changed))
                })
                .await
            }

            async fn delete_expired_sessions(
                &self,
                now: $crate::clock::Timestamp,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                // GC does not say which rows it deleted: forget every row, unless it deleted none.
                let this = self.clone();
                self.session_write($crate::store::row_cache::Scope::All, async move {
                    let deleted = this
                        .delete_expired($sql.delete_expired_sessions, now, limit)
                        .await?;
                    let changed = if deleted == 0 {
                        $crate::store::row_cache::Changed::Nothing
                    } else {
                        $crate::store::row_cache::Changed::Scope
                    };
                    Ok((deleted, changed))
                })
                .await
            }

            async fn rotate_refresh(
                &self,
                r: $crate::store::RefreshRotation<'_>,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::rows::millis;
                let (new_hash, expected_hash) = (*r.new_hash, *r.expected_hash);
                let generation = $crate::store::rows::generation(r.generation)?;
                let chain = $crate::session::RefreshStep::encode_chain(r.chain);
                let (now, idle_expires_at) = (millis(r.now), millis(r.idle_expires_at));
                let (id, only_if_unused) = (r.id.as_str().to_owned(), r.only_if_unused);
                let (this, scope) = (
                    self.clone(),
                    $crate::store::row_cache::Scope::One(r.id.clone()),
                );
                self.session_write(scope, async move {
                    let changed = $crate::store::sql::hot_write!(this, |conn| sqlx::query(
                        $sql.rotate_refresh
                    )
                    .bind(new_hash.as_slice())
                    .bind(generation)
                    .bind(chain.as_str())
                    .bind(now)
                    .bind(idle_expires_at)
                    .bind(id.as_str())
                    .bind(expected_hash.as_slice())
                    .bind(only_if_unused))
                    .await?;
                    Ok((
                        changed == 1,
                        $crate::store::row_cache::Changed::unless(changed == 0),
                    ))
                })
                .await
            }

            async fn mark_refresh_used(
                &self,
                id: &$crate::id::SessionId,
                generation: u64,
            ) -> Result<bool, $crate::store::StoreError> {
                let generation = $crate::store::rows::generation(generation)?;
                let (this, id_text) = (self.clone(), id.as_str().to_owned());
                let scope = $crate::store::row_cache::Scope::One(id.clone());
                self.session_write(scope, async move {
                    let changed = $crate::store::sql::hot_write!(this, |conn| sqlx::query(
                        $sql.mark_refresh_used
                    )
                    .bind(id_text.as_str())
                    .bind(generation))
                    .await?;
                    Ok((
                        changed == 1,
                        $crate::store::row_cache::Changed::unless(changed == 0),
                    ))
                })
                .await
            }

            /// The row cache's counters, as `session_rows` (none when it is off).
            fn cache_stats(&self) -> Vec<(&'static str, $crate::cache::CacheStats)> {
                self.rows
                    .as_deref()
                    .map(|rows| vec![("session_rows", rows.stats())])
                    .unwrap_or_default()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ClaimStore for $store {
            async fn claim(
                &self,
                id: &str,
                expires_at: $crate::clock::Timestamp,
                now: $crate::clock::Timestamp,
            ) -> Result<$crate::store::ClaimOutcome, $crate::store::StoreError> {
                if $crate::clock::is_expired(expires_at, now) {
                    return Ok($crate::store::ClaimOutcome::Expired);
                }
                // Insert-if-absent in one statement; a leftover record that has itself expired
                // (not yet collected) is replaced, so the outcome never depends on GC timing.
                let done = sqlx::query($sql.claim)
                    .bind(id)
                    .bind($crate::store::rows::millis(expires_at))
                    .bind($crate::store::rows::millis(now))
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok($crate::store::rows::claim_outcome(done.rows_affected()))
            }

            async fn delete_expired_claims(
                &self,
                now: $crate::clock::Timestamp,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                self.delete_expired($sql.delete_expired_claims, now, limit)
                    .await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $store {
            async fn keys(
                &self,
            ) -> Result<Vec<$crate::keys::KeyRecord>, $crate::store::StoreError> {
                let rows = sqlx::query($crate::store::sql::KEYS)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(map_err)?;
                rows.iter().map($crate::store::rows::key_from_row).collect()
            }

            async fn insert_first_active_key(
                &self,
                key: &$crate::keys::KeyRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::rows::Bind as _;
                let mut tx = self
                    .begin_serialized(&["signing_keys", key.purpose.as_str()])
                    .await?;
                let done = sqlx::query($sql.insert_first_key)
                    .new_key(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn rotate_key(
                &self,
                key: &$crate::keys::KeyRecord,
                retired_at: $crate::clock::Timestamp,
                verify_until: $crate::clock::Timestamp,
                expected_active: Option<&$crate::id::KeyId>,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::rows::Bind as _;
                let mut tx = self
                    .begin_serialized(&["signing_keys", key.purpose.as_str()])
                    .await?;
                let retired = sqlx::query($sql.retire_key)
                    .bind($crate::store::rows::millis(retired_at))
                    .bind($crate::store::rows::millis(verify_until))
                    .bind(key.purpose.as_str())
                    .bind(expected_active.map($crate::id::KeyId::as_str))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if expected_active.is_some() && retired.is_none() {
                    tx.rollback().await.map_err(map_err)?;
                    return Ok(false);
                }
                if let Some(row) = &retired {
                    use $crate::store::rows::Columns as _;
                    let id = row.text("signing_keys.id")?;
                    Self::record_retired(&mut tx, row, key.purpose, &id, retired_at).await?;
                }
                sqlx::query($sql.insert_key)
                    .new_key(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn end_key(
                &self,
                id: &$crate::id::KeyId,
                purpose: $crate::keys::KeyPurpose,
                at: $crate::clock::Timestamp,
                replacement: &$crate::keys::KeyRecord,
            ) -> Result<$crate::store::KeyEnding, $crate::store::StoreError> {
                use $crate::store::rows::{millis, Bind as _};
                use $crate::store::KeyEnding;
                let mut tx = self
                    .begin_serialized(&["signing_keys", purpose.as_str()])
                    .await?;
                // Ends the key if it is active, else if it is retired but still verifies; the
                // first statement writes (SQLite takes the write lock up front).
                let mut ended = None;
                for (sql, ending) in [
                    ($sql.end_active_key, KeyEnding::EndedActive),
                    ($sql.end_retired_key, KeyEnding::EndedRetired),
                ] {
                    let row = sqlx::query(sql)
                        .bind(millis(at))
                        .bind(id.as_str())
                        .bind(purpose.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    if let Some(row) = row {
                        ended = Some((ending, row));
                        break;
                    }
                }
                let ending = match &ended {
                    Some((ending, row)) => {
                        Self::record_retired(&mut tx, row, purpose, id.as_str(), at).await?;
                        *ending
                    }
                    None => {
                        let exists = sqlx::query($sql.key_exists)
                            .bind(id.as_str())
                            .bind(purpose.as_str())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(map_err)?
                            .is_some();
                        if exists {
                            KeyEnding::AlreadyEnded
                        } else {
                            KeyEnding::NotFound
                        }
                    }
                };
                if ending == KeyEnding::EndedActive {
                    sqlx::query($sql.insert_key)
                        .new_key(replacement)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(ending)
            }

            async fn record_operator_key(
                &self,
                id: &$crate::id::KeyId,
                fingerprint: &$crate::keys::Fingerprint,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($sql.record_operator_key)
                    .bind(fingerprint.as_bytes().as_slice())
                    .bind(id.as_str())
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn retired_operator_key(
                &self,
                fingerprint: &$crate::keys::Fingerprint,
            ) -> Result<Option<$crate::id::KeyId>, $crate::store::StoreError> {
                use $crate::store::rows::Columns as _;
                let row = sqlx::query($sql.retired_operator_key)
                    .bind(fingerprint.as_bytes().as_slice())
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(map_err)?;
                row.as_ref()
                    .map(|row| {
                        $crate::id::KeyId::parse(&row.text("retired_operator_keys.key_id")?)
                            .map_err(|_| $crate::store::StoreError::Corrupt {
                                what: "retired_operator_keys.key_id",
                            })
                    })
                    .transpose()
            }

            async fn delete_expired_keys(
                &self,
                now: $crate::clock::Timestamp,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                self.delete_expired($sql.delete_expired_keys, now, limit)
                    .await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $store {
            async fn append_audit(
                &self,
                record: &$crate::audit::AuditRecord,
            ) -> Result<(), $crate::store::StoreError> {
                self.append_audit_record(record).await
            }

            async fn audit_records(
                &self,
                query: &$crate::audit::AuditQuery,
            ) -> Result<Vec<$crate::audit::AuditRecord>, $crate::store::StoreError> {
                let rows = sqlx::query($sql.audit_records)
                    .bind(query.session_id.as_ref().map($crate::id::SessionId::as_str))
                    .bind(query.user_id.as_ref().map($crate::id::UserId::as_str))
                    .bind($crate::store::rows::audit_limit(query))
                    .fetch_all(&self.$read)
                    .await
                    .map_err(map_err)?;
                rows.iter()
                    .map($crate::store::rows::audit_from_row)
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ApiKeyStore for $store {
            async fn insert_api_key(
                &self,
                key: &$crate::store::ApiKeyRecord,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::rows::Bind as _;
                sqlx::query($sql.insert_api_key)
                    .api_key(key)
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok(())
            }

            async fn api_key_by_hash(
                &self,
                hash: &[u8; 32],
            ) -> Result<Option<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
                let row = sqlx::query($sql.api_key_by_hash)
                    .bind(hash.as_slice())
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(map_err)?;
                row.as_ref()
                    .map($crate::store::rows::api_key_from_row)
                    .transpose()
            }

            async fn api_keys(
                &self,
            ) -> Result<Vec<$crate::store::ApiKeyRecord>, $crate::store::StoreError> {
                let rows = sqlx::query($sql.api_keys)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(map_err)?;
                rows.iter()
                    .map($crate::store::rows::api_key_from_row)
                    .collect()
            }

            async fn revoke_api_key(
                &self,
                id: &$crate::id::ApiKeyId,
                at: $crate::clock::Timestamp,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($sql.revoke_api_key)
                    .bind($crate::store::rows::millis(at))
                    .bind(id.as_str())
                    .execute(&self.$write)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}

pub(super) use sql_store;
