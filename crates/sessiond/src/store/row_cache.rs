//! A coherent in-process cache of session rows (docs/DESIGN.md §15.4).
//!
//! The cache is a mirror of the table, not a guess about it: a row it answers with is the row
//! the store would read, for every change that has returned. Three rules make it so.
//!
//! 1. **This process's writes.** Every session write of the store takes a [`Written`] guard
//!    before it starts; when the guard drops it forgets the rows the write may have changed (one
//!    id, the ids the statement returned, or everything when it cannot say). A write that did not
//!    finish (an error, or the caller's future dropped mid-write: a client that hung up) may
//!    still commit after the guard dropped, so then the rows are forgotten once more, after the
//!    store's writer has finished whatever was queued before (the store's [`Barrier`]).
//! 2. **A read that races a write.** A miss takes a [`Ticket`] before it reads the row and may
//!    keep the row only if no write forgot that row (or everything) since: otherwise a read that
//!    began before a revocation and finished after it would cache the live row for good.
//! 3. **Other writers.** Before a held row answers, the store proves that nobody else wrote since
//!    the cache last checked ([`RowCache::observe_others`]); when it cannot, it reads through.
//!    How it proves that is the dialect's (SQLite: the WAL-index header unchanged since the
//!    last full proof, or the full proof over the tables `sessiond_writers` and
//!    `sessiond_anonymous_writes`, kept by triggers, see `sqlite`). A row looked up before
//!    another caller's proof forgot everything must not answer: [`RowCache::get`] checks the
//!    lookup's ticket after the proof.

// The write guard, its barrier and the proof of other writers are SQLite's; a build with the
// PostgreSQL store alone announces its writes instead (`pg_lease`) and uses the rest.
#![cfg_attr(not(feature = "sqlite"), allow(dead_code))]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::cache::{BoundedCache, CacheLimits, CacheStats};
use crate::id::SessionId;
use crate::session::SessionRecord;

/// Invalidation epochs: a write bumps its row's shard, so a racing fill of that row (or of a
/// row in the same shard) is dropped; forgetting everything bumps every shard.
const EPOCH_SHARDS: usize = 64;

/// The cache key of a session id: a one-byte mix of the whole id first (the cache shards by
/// the first byte, so shards stay even whatever the ids look like), then the id's random body
/// (22 base64url characters), zero-padded: distinct ids, distinct keys. An id too long for that
/// (none is: `SessionId` has a fixed length) is hashed instead.
fn key(id: &SessionId) -> [u8; 32] {
    let bytes = id.as_str().as_bytes();
    let body = bytes.get(4..).unwrap_or(bytes);
    let mut key = [0u8; 32];
    match key.get_mut(1..=body.len()) {
        Some(rest) => {
            rest.copy_from_slice(body);
            // FNV-1a over the body, folded to a byte.
            let mix = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            key[0] = mix.to_le_bytes().iter().fold(0, |a, b| a ^ b);
        }
        None => key = Sha256::digest(body).into(),
    }
    key
}

/// What the bytes limit counts for one row: the record and its heap parts (estimate).
fn size_of(record: &SessionRecord) -> usize {
    let s = &record.session;
    // Claims are estimated, not serialized (this runs on every fill): a string's length, a
    // flat 16 bytes for anything else.
    let claims: usize = s
        .claims
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(16, str::len) + 48)
        .sum();
    std::mem::size_of::<SessionRecord>()
        + s.id.as_str().len()
        + s.user_id.as_str().len()
        + s.tenant.as_str().len()
        + s.ip.as_ref().map_or(0, String::len)
        + s.user_agent.as_ref().map_or(0, String::len)
        + record.key_id.as_str().len()
        + record
            .refresh
            .as_ref()
            .map_or(0, |r| 64 + r.chain.len() * 48)
        + claims
}

/// Resolves once the store's writer has finished every statement queued before it was called
/// (SQLite: a statement on the single writer connection, which runs its commands in order).
pub(crate) type Barrier = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The session-row cache of one store.
pub(crate) struct RowCache {
    rows: BoundedCache<Arc<SessionRecord>>,
    epochs: Box<[AtomicU64]>,
    /// What [`RowCache::observe_others`] last saw of other writers (`i64::MIN`: nothing yet).
    others: [AtomicI64; 2],
    /// Serialises "forget everything, then record what was seen" between callers that noticed
    /// the same change.
    noticing: Mutex<()>,
    /// Waits for the writer's queue to drain (rule 1, unfinished writes).
    barrier: Barrier,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// Taken by a miss before it reads: the epoch of the row's shard then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    key: [u8; 32],
    epoch: u64,
}

impl RowCache {
    /// A cache within `limits` for a store whose writer drains with `barrier`; `None` when the
    /// limits turn it off.
    pub(crate) fn new(limits: CacheLimits, barrier: Barrier) -> Option<Self> {
        let rows = BoundedCache::new(limits);
        rows.is_on().then(|| RowCache {
            rows,
            epochs: (0..EPOCH_SHARDS).map(|_| AtomicU64::new(0)).collect(),
            others: [AtomicI64::new(i64::MIN), AtomicI64::new(i64::MIN)],
            noticing: Mutex::new(()),
            barrier,
        })
    }

    fn epoch(&self, key: &[u8; 32]) -> &AtomicU64 {
        // `epochs` has EPOCH_SHARDS (> 0) entries, so the index is in range.
        #[allow(clippy::indexing_slicing)]
        &self.epochs[usize::from(key[0]) % EPOCH_SHARDS]
    }

    /// The held row for `ticket` (taken before this call), if any and if `proof` then says no
    /// other writer changed the table since the last proof (it calls
    /// [`RowCache::observe_others`]) and nothing was forgotten since the ticket: a row looked up
    /// just before another caller's proof forgot it (that caller saw a change; ours then finds
    /// the change already observed) must not answer. Counted as a hit only when the row answers.
    pub(crate) fn get(
        &self,
        ticket: &Ticket,
        proof: impl FnOnce() -> bool,
    ) -> Option<Arc<SessionRecord>> {
        let held = self
            .rows
            .peek(&ticket.key)
            .filter(|_| proof() && self.epoch(&ticket.key).load(Ordering::SeqCst) == ticket.epoch);
        self.rows.count(held.is_some());
        held
    }

    /// Taken before a read whose row may be kept.
    pub(crate) fn ticket(&self, id: &SessionId) -> Ticket {
        let key = key(id);
        Ticket {
            key,
            epoch: self.epoch(&key).load(Ordering::SeqCst),
        }
    }

    /// Keeps `record`, read after `ticket` was taken, unless a write forgot its shard since.
    pub(crate) fn fill(&self, ticket: Ticket, record: &SessionRecord) {
        let epoch = self.epoch(&ticket.key);
        if epoch.load(Ordering::SeqCst) != ticket.epoch {
            return;
        }
        self.rows
            .insert(ticket.key, Arc::new(record.clone()), size_of(record));
        // A write that forgot the row between the check and the insert bumped the epoch after
        // its commit; if it did, forget again (its guard may have run before our insert).
        if epoch.load(Ordering::SeqCst) != ticket.epoch {
            self.rows.remove(&ticket.key);
        }
    }

    /// Forgets the row of `id`: its epoch moves first, so a fill racing this is dropped.
    pub(crate) fn forget(&self, id: &SessionId) {
        let key = key(id);
        self.epoch(&key).fetch_add(1, Ordering::SeqCst);
        self.rows.remove(&key);
    }

    /// Forgets the rows of `scope`.
    pub(crate) fn forget_scope(&self, scope: &Scope) {
        match scope {
            Scope::One(id) => self.forget(id),
            Scope::Many(ids) => ids.iter().for_each(|id| self.forget(id)),
            Scope::All => self.forget_all(),
        }
    }

    /// Forgets every row.
    pub(crate) fn forget_all(&self) {
        for epoch in self.epochs.iter() {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.rows.clear();
    }

    /// Records what the store read of other writers' progress (values that move whenever
    /// another writer commits a session change). A change since the last call forgets every
    /// row before returning, so no caller answers from a row older than the change. Returns
    /// whether nothing changed (a held row may answer).
    pub(crate) fn observe_others(&self, seen: [i64; 2]) -> bool {
        let same = |others: &[AtomicI64; 2]| {
            others
                .iter()
                .zip(seen)
                .all(|(was, now)| was.load(Ordering::SeqCst) == now)
        };
        if same(&self.others) {
            return true;
        }
        let _one = self.noticing.lock().unwrap_or_else(PoisonError::into_inner);
        if !same(&self.others) {
            // Forget first: a caller that sees the new values must find nothing older.
            self.forget_all();
            for (was, now) in self.others.iter().zip(seen) {
                was.store(now, Ordering::SeqCst);
            }
        }
        false
    }

    /// Hits, misses, evictions, entries, bytes.
    pub(crate) fn stats(&self) -> CacheStats {
        self.rows.stats()
    }
}

/// Which rows a session write may change.
#[derive(Debug)]
pub(crate) enum Scope {
    /// One session's row.
    One(SessionId),
    /// These rows (what a statement said it changed).
    Many(Vec<SessionId>),
    /// Any number: forget every row.
    All,
}

/// What a session write says it changed, once it has run (see `sql`'s `session_write`).
#[derive(Debug)]
pub(crate) enum Changed {
    /// Possibly any row of the write's scope.
    Scope,
    /// These rows (what a statement said it changed).
    Rows(Vec<SessionId>),
    /// No row, but the row was not what the caller expected (a compare-and-swap or a
    /// conditional update that found another write's result): forget this process's copy, so
    /// the caller's next read finds what beat it, and tell no other node (nothing changed).
    Stale,
    /// No row, and nothing learned (a new row, a sweep that deleted nothing).
    Nothing,
}

impl Changed {
    /// [`Changed::Stale`] when the write found the row otherwise than expected, else
    /// [`Changed::Scope`].
    pub(crate) fn unless(unexpected: bool) -> Self {
        if unexpected {
            Changed::Stale
        } else {
            Changed::Scope
        }
    }
}

/// Forgets the rows a write may have changed when it drops (see the module docs, rule 1).
#[must_use = "the guard forgets rows when it drops, after the write"]
pub(crate) struct Written<'a> {
    cache: Option<&'a Arc<RowCache>>,
    scope: Scope,
    finished: bool,
}

impl<'a> Written<'a> {
    /// A guard for a write of `scope` on `cache` (none: nothing to forget).
    pub(crate) fn new(cache: Option<&'a Arc<RowCache>>, scope: Scope) -> Self {
        Written {
            cache,
            scope,
            finished: false,
        }
    }

    /// The write finished (committed, or failed with nothing left to run).
    pub(crate) fn finished(&mut self) {
        self.finished = true;
    }

    /// The write finished and said which rows it changed: forget only those.
    pub(crate) fn finished_with<'i>(&mut self, ids: impl IntoIterator<Item = &'i SessionId>) {
        self.scope = Scope::Many(ids.into_iter().cloned().collect());
        self.finished = true;
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        let Some(cache) = self.cache else {
            return;
        };
        cache.forget_scope(&self.scope);
        if self.finished {
            return;
        }
        // Not finished: the statement may still be queued on the writer and commit later.
        // Forget again once the writer has run everything queued before now. Without a runtime
        // (a drop at shutdown) nothing runs writes any more either.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (cache, scope) = (
                Arc::clone(cache),
                std::mem::replace(&mut self.scope, Scope::All),
            );
            runtime.spawn(async move {
                (cache.barrier)().await;
                cache.forget_scope(&scope);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::id::{KeyId, Tenant, UserId};
    use crate::random::OsRandom;
    use crate::session::{Session, SessionKind};

    fn record() -> SessionRecord {
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let session = Session {
            id: SessionId::generate(&OsRandom),
            user_id: UserId::new("alice").unwrap(),
            tenant: Tenant::default(),
            kind: SessionKind::Cookie,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.saturating_add(std::time::Duration::from_secs(60)),
            absolute_expires_at: now.saturating_add(std::time::Duration::from_secs(600)),
            revoked_at: None,
            revoke_reason: None,
            ip: None,
            user_agent: None,
            claims: serde_json::Map::new(),
        };
        SessionRecord::new(session, KeyId::generate(&OsRandom), Some([7; 32]), None)
    }

    fn no_barrier() -> Barrier {
        Box::new(|| Box::pin(async {}))
    }

    fn cache() -> Arc<RowCache> {
        Arc::new(RowCache::new(CacheLimits::new(1024, 1 << 20), no_barrier()).unwrap())
    }

    fn done(cache: &Arc<RowCache>, scope: Scope) {
        let mut written = Written::new(Some(cache), scope);
        written.finished();
    }

    #[test]
    fn off_limits_make_no_cache() {
        assert!(RowCache::new(CacheLimits::off(), no_barrier()).is_none());
    }

    #[test]
    fn a_fill_is_kept_and_a_write_forgets_it() {
        let cache = cache();
        let r = record();
        let id = r.session.id.clone();
        cache.fill(cache.ticket(&id), &r);
        assert_eq!(
            cache.get(&cache.ticket(&id), || true).unwrap().session,
            r.session
        );
        done(&cache, Scope::One(id.clone()));
        assert!(cache.get(&cache.ticket(&id), || true).is_none());
    }

    #[test]
    fn a_fill_that_raced_a_write_is_dropped() {
        let cache = cache();
        let r = record();
        let id = r.session.id.clone();
        // The read began (ticket), a write of that row finished, then the read's row arrives.
        let ticket = cache.ticket(&id);
        drop(Written::new(Some(&cache), Scope::One(id.clone())));
        cache.fill(ticket, &r);
        assert!(
            cache.get(&cache.ticket(&id), || true).is_none(),
            "a row read before the write was kept"
        );
        // Forgetting everything drops racing fills of every row.
        let ticket = cache.ticket(&id);
        drop(Written::new(Some(&cache), Scope::All));
        cache.fill(ticket, &r);
        assert!(cache.get(&cache.ticket(&id), || true).is_none());
        // A fresh read after the write is kept.
        cache.fill(cache.ticket(&id), &r);
        assert!(cache.get(&cache.ticket(&id), || true).is_some());
    }

    /// A row looked up before another caller's proof forgot everything does not answer, even
    /// when our own proof then finds nothing new (the change was already observed).
    #[test]
    fn a_row_looked_up_before_a_forget_does_not_answer() {
        let cache = cache();
        let r = record();
        let id = r.session.id.clone();
        assert!(!cache.observe_others([1, 0]));
        cache.fill(cache.ticket(&id), &r);
        let ticket = cache.ticket(&id);
        let held = cache.get(&ticket, || {
            // Another caller sees a change and forgets, between our lookup and our proof.
            assert!(!cache.observe_others([2, 0]));
            cache.observe_others([2, 0])
        });
        assert!(held.is_none(), "a row from before the forget answered");
    }

    #[test]
    fn narrowing_forgets_only_the_named_rows() {
        let cache = cache();
        let (a, b) = (record(), record());
        for r in [&a, &b] {
            cache.fill(cache.ticket(&r.session.id), r);
        }
        let mut written = Written::new(Some(&cache), Scope::All);
        written.finished_with([&a.session.id]);
        drop(written);
        assert!(cache.get(&cache.ticket(&a.session.id), || true).is_none());
        assert!(cache.get(&cache.ticket(&b.session.id), || true).is_some());
        // Narrowed to nothing: nothing forgotten.
        let mut written = Written::new(Some(&cache), Scope::All);
        written.finished_with([]);
        drop(written);
        assert!(cache.get(&cache.ticket(&b.session.id), || true).is_some());
    }

    /// A write that did not finish forgets its row at once and again after the barrier: a row
    /// read in between (before the write's late commit) does not stay.
    #[tokio::test]
    async fn an_unfinished_write_forgets_again_after_the_writer_drains() {
        let (open, opened) = tokio::sync::oneshot::channel::<()>();
        let opened = Arc::new(Mutex::new(Some(opened)));
        let barrier: Barrier = Box::new(move || {
            let opened = opened.lock().unwrap().take();
            Box::pin(async move {
                if let Some(opened) = opened {
                    let _ = opened.await;
                }
            })
        });
        let cache = Arc::new(RowCache::new(CacheLimits::new(1024, 1 << 20), barrier).unwrap());
        let r = record();
        let id = r.session.id.clone();
        drop(Written::new(Some(&cache), Scope::One(id.clone())));
        // Read after the guard dropped, before the write landed: kept for now.
        cache.fill(cache.ticket(&id), &r);
        assert!(cache.get(&cache.ticket(&id), || true).is_some());
        // The writer drains (the late write has committed): the row is forgotten.
        open.send(()).unwrap();
        for _ in 0..100 {
            if cache.get(&cache.ticket(&id), || true).is_none() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the row of an unfinished write was never forgotten");
    }

    #[test]
    fn another_writers_progress_forgets_everything_once() {
        let cache = cache();
        let r = record();
        let id = r.session.id.clone();
        assert!(!cache.observe_others([5, 0]), "the first sight is a change");
        cache.fill(cache.ticket(&id), &r);
        assert!(cache.observe_others([5, 0]));
        assert!(
            cache.get(&cache.ticket(&id), || true).is_some(),
            "no change, nothing forgotten"
        );
        let ticket = cache.ticket(&id);
        assert!(!cache.observe_others([6, 0]));
        assert!(cache.get(&cache.ticket(&id), || true).is_none());
        cache.fill(ticket, &r);
        assert!(
            cache.get(&cache.ticket(&id), || true).is_none(),
            "a fill from before the change was kept"
        );
        // Either value counts, and any change, a smaller value too (the table was pruned).
        for seen in [[6, 1], [2, 1]] {
            cache.fill(cache.ticket(&id), &r);
            assert!(!cache.observe_others(seen));
            assert!(cache.get(&cache.ticket(&id), || true).is_none());
        }
    }

    #[test]
    fn keys_are_the_ids_random_body_behind_a_spread_byte() {
        let a = SessionId::generate(&OsRandom);
        let k = key(&a);
        assert_eq!(&k[1..23], &a.as_str().as_bytes()[4..]);
        assert_eq!(&k[23..], &[0u8; 9]);
        assert_ne!(key(&SessionId::generate(&OsRandom)), k);
        // Ids that share their first characters still spread over the shards.
        let first: std::collections::HashSet<u8> = (0..256u32)
            .map(|n| key(&SessionId::parse(&format!("ses-{n:021}A")).unwrap())[0])
            .collect();
        assert!(first.len() > 64, "{}", first.len());
    }
}
