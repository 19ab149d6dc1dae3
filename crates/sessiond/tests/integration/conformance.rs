//! The storage conformance suite: written once against the store traits, instantiated per
//! backend with [`conformance_suite!`] (a full `Backend`) or [`claims_conformance_suite!`] (a
//! store that keeps only one-time claims, e.g. Redis). Every backend must pass it unmodified.

use std::sync::Arc;

use sessiond::audit::{AuditEvent, AuditQuery, AuditRecord};
use sessiond::keys::{Fingerprint, KeyAlgorithm, KeyOrigin, KeyPurpose, KeyRecord};
use sessiond::session::{RefreshState, RefreshStep, Session, SessionKind, SessionRecord};
use sessiond::store::{
    ApiKeyRecord, ApiKeyScope, ApiKeyStore, Backend, ClaimOutcome, ClaimStore, KeyEnding,
    RefreshRotation, Revocation, SessionOwner, StoreError,
};
use sessiond::{KeyId, RevokeReason, SeededRandom, SessionId, Tenant, Timestamp, UserId};

use crate::common::T0;

/// Instantiates every conformance case as a `#[tokio::test]` for the backend made by
/// `$factory` (an async fn returning `common::TestBackend`): the claim cases of
/// [`claims_conformance_suite!`] plus everything else a full backend stores.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::claims_conformance_suite!($factory);
        $crate::conformance_suite!(@cases $factory;
            session_round_trip_keeps_every_field,
            missing_session_is_none,
            touch_is_conditional_and_capped,
            revoke_is_idempotent,
            revoke_user_scopes_by_tenant_and_except,
            user_sessions_lists_only_active_oldest_first,
            csrf_hash_only_changes_on_active_sessions,
            eviction_keeps_the_newest,
            concurrent_creates_respect_the_limit,
            gc_deletes_expired_in_bounded_batches,
            first_active_key_is_inserted_once,
            concurrent_key_bootstrap_has_one_winner,
            rotation_retires_and_replaces,
            retired_keys_past_retention_are_collected,
            audit_appends_and_filters,
            expired_claims_are_collected,
            refresh_rotation_is_compare_and_swap,
            refresh_use_is_recorded_once_per_pair,
            concurrent_refresh_rotations_have_one_winner,
            concurrent_revokes_have_one_winner,
            concurrent_touches_write_once,
            concurrent_evictions_and_revocations_settle_every_session_once,
            concurrent_bootstrap_and_rotations_leave_one_active_key,
            concurrent_reclaims_of_an_expired_claim_have_one_winner,
            rotation_is_a_compare_and_swap_on_the_active_key,
            retired_operator_fingerprints_outlive_their_keys,
            ending_a_key_is_atomic_and_idempotent,
            a_generated_key_is_recorded_as_operator_once,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $factory().await;
                $crate::conformance::$case(backend.store.clone()).await;
            }
        )*
    };
}

/// Instantiates the one-time claim cases as `#[tokio::test]`s for the store made by `$factory`:
/// an async fn returning a value whose `store` field is an `Arc` of a [`ClaimStore`] (or of a
/// full `Backend`, which upcasts), kept alive for the test.
#[macro_export]
macro_rules! claims_conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@cases $factory;
            claim_is_once_until_expiry,
            concurrent_claims_have_one_winner,
            expired_claims_can_be_claimed_again,
        );
    };
}

pub fn t(offset_secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0.unix_millis() + offset_secs * 1000)
}

fn rng() -> SeededRandom {
    SeededRandom::new(rand_seed())
}

fn rand_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ std::process::id() as u64
}

fn key_id() -> KeyId {
    KeyId::generate(&rng())
}

pub fn record(user: &str, tenant: &str, created: i64, idle: i64, abs: i64) -> SessionRecord {
    let mut claims = serde_json::Map::new();
    claims.insert("role".into(), serde_json::json!("admin"));
    let session = Session {
        id: SessionId::generate(&rng()),
        user_id: UserId::new(user).unwrap(),
        tenant: Tenant::new(tenant).unwrap(),
        kind: SessionKind::Cookie,
        created_at: t(created),
        last_seen_at: t(created),
        idle_expires_at: t(idle),
        absolute_expires_at: t(abs),
        revoked_at: None,
        revoke_reason: None,
        ip: Some("198.51.100.4".into()),
        user_agent: Some("Mozilla/5.0 (conformance)".into()),
        claims,
    };
    SessionRecord::new(session, key_id(), Some([3u8; 32]), None)
}

/// Whose `rec` is, as a store change reports it.
fn owner(rec: &SessionRecord) -> SessionOwner {
    SessionOwner {
        id: rec.session.id.clone(),
        user_id: rec.session.user_id.clone(),
        tenant: rec.session.tenant.clone(),
    }
}

/// `owners` in id order (a statement returns the rows it changed in no particular order).
fn sorted(mut owners: Vec<SessionOwner>) -> Vec<SessionOwner> {
    owners.sort_by(|a, b| a.id.cmp(&b.id));
    owners
}

pub async fn session_round_trip_keeps_every_field(store: Arc<dyn Backend>) {
    let mut rec = record("alice", "acme", 0, 3600, 28_800);
    rec.session.kind = SessionKind::Tokens;
    rec.csrf_hash = None;
    let mut refresh: RefreshState = test_refresh_state();
    refresh.generation = 7;
    rec.refresh = Some(refresh);
    assert!(store
        .create_session(&rec, None, t(0))
        .await
        .unwrap()
        .is_empty());
    let back = store.session(&rec.session.id).await.unwrap().unwrap();
    assert!(
        back == rec,
        "round trip changed the record: {back:?} vs {rec:?}"
    );

    let plain = record("bob", "default", 5, 100, 200);
    store.create_session(&plain, None, t(5)).await.unwrap();
    let back = store.session(&plain.session.id).await.unwrap().unwrap();
    assert!(back == plain);
    assert_eq!(back.session.claims["role"], "admin");
}

fn test_refresh_state() -> RefreshState {
    RefreshState {
        hash: [9u8; 32],
        generation: 3,
        used: false,
        chain: vec![step(2, 1, 0), step(3, 2, 1)],
    }
}

fn step(generation: u64, parent: u64, at: i64) -> RefreshStep {
    RefreshStep {
        generation,
        parent,
        at: Timestamp::from_unix_millis(t(at).unix_millis() + 7), // milliseconds survive
        key_id: key_id(),
    }
}

pub async fn missing_session_is_none(store: Arc<dyn Backend>) {
    assert!(store
        .session(&SessionId::generate(&rng()))
        .await
        .unwrap()
        .is_none());
}

pub async fn touch_is_conditional_and_capped(store: Arc<dyn Backend>) {
    let rec = record("carol", "default", 0, 100, 150);
    let id = &rec.session.id;
    store.create_session(&rec, None, t(0)).await.unwrap();
    // last_seen_at (0) is not at or before -1: no write.
    assert!(!store.touch_session(id, t(30), t(130), t(-1)).await.unwrap());
    assert!(store.touch_session(id, t(60), t(160), t(0)).await.unwrap());
    let s = store.session(id).await.unwrap().unwrap().session;
    assert_eq!(s.last_seen_at, t(60));
    assert_eq!(
        s.idle_expires_at,
        t(150),
        "idle expiry is capped at the absolute expiry"
    );
    // A second concurrent touch with the old staleness bound writes nothing.
    assert!(!store.touch_session(id, t(61), t(161), t(0)).await.unwrap());
    store
        .revoke_session(id, t(70), &RevokeReason::logout())
        .await
        .unwrap();
    assert!(
        !store
            .touch_session(id, t(120), t(200), t(120))
            .await
            .unwrap(),
        "revoked rows are not touched"
    );
    assert!(!store
        .touch_session(&SessionId::generate(&rng()), t(1), t(2), t(3))
        .await
        .unwrap());
}

pub async fn revoke_is_idempotent(store: Arc<dyn Backend>) {
    let rec = record("dave", "default", 0, 100, 200);
    store.create_session(&rec, None, t(0)).await.unwrap();
    let reason = RevokeReason::new("admin_action").unwrap();
    assert_eq!(
        store
            .revoke_session(&rec.session.id, t(10), &reason)
            .await
            .unwrap(),
        Revocation::Revoked(owner(&rec)),
        "the revoking statement returns the owner"
    );
    assert_eq!(
        store
            .revoke_session(&rec.session.id, t(20), &RevokeReason::logout())
            .await
            .unwrap(),
        Revocation::AlreadyRevoked
    );
    let s = store
        .session(&rec.session.id)
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(
        s.revoked_at,
        Some(t(10)),
        "the first revocation's time is kept"
    );
    assert_eq!(
        s.revoke_reason.as_ref().map(RevokeReason::as_str),
        Some("admin_action")
    );
    assert_eq!(
        store
            .revoke_session(&SessionId::generate(&rng()), t(10), &reason)
            .await
            .unwrap(),
        Revocation::NotFound
    );
    // An expired but unrevoked row is revoked too, and reports its owner.
    let expired = record("dave", "globex", 0, 5, 200);
    store.create_session(&expired, None, t(0)).await.unwrap();
    assert_eq!(
        store
            .revoke_session(&expired.session.id, t(10), &reason)
            .await
            .unwrap(),
        Revocation::Revoked(owner(&expired))
    );
}

pub async fn revoke_user_scopes_by_tenant_and_except(store: Arc<dyn Backend>) {
    let a1 = record("erin", "acme", 0, 1000, 2000);
    let a2 = record("erin", "acme", 1, 1000, 2000);
    let b1 = record("erin", "globex", 2, 1000, 2000);
    let other = record("frank", "acme", 3, 1000, 2000);
    let expired = record("erin", "acme", 0, 5, 2000);
    for r in [&a1, &a2, &b1, &other, &expired] {
        store.create_session(r, None, t(0)).await.unwrap();
    }
    let reason = RevokeReason::revoked_all();
    let erin = UserId::new("erin").unwrap();
    let acme = Tenant::new("acme").unwrap();
    let revoked = store
        .revoke_user_sessions(&erin, Some(&acme), Some(&a2.session.id), t(10), &reason)
        .await
        .unwrap();
    assert_eq!(
        revoked,
        vec![owner(&a1)],
        "only active, in-tenant, not excepted"
    );
    let revoked = store
        .revoke_user_sessions(&erin, None, None, t(11), &reason)
        .await
        .unwrap();
    assert_eq!(
        sorted(revoked),
        sorted(vec![owner(&a2), owner(&b1)]),
        "across tenants, each with its own tenant"
    );
    assert!(store
        .revoke_user_sessions(&erin, None, None, t(12), &reason)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .session(&other.session.id)
        .await
        .unwrap()
        .unwrap()
        .session
        .revoked_at
        .is_none());
    assert!(store
        .session(&expired.session.id)
        .await
        .unwrap()
        .unwrap()
        .session
        .revoked_at
        .is_none());
}

pub async fn user_sessions_lists_only_active_oldest_first(store: Arc<dyn Backend>) {
    let old = record("gina", "acme", 0, 1000, 2000);
    let new = record("gina", "acme", 5, 1000, 2000);
    let other_tenant = record("gina", "globex", 6, 1000, 2000);
    let idle_gone = record("gina", "acme", 1, 10, 2000);
    let abs_gone = record("gina", "acme", 2, 1000, 10);
    let revoked = record("gina", "acme", 3, 1000, 2000);
    for r in [&new, &old, &other_tenant, &idle_gone, &abs_gone, &revoked] {
        store.create_session(r, None, t(0)).await.unwrap();
    }
    store
        .revoke_session(&revoked.session.id, t(4), &RevokeReason::logout())
        .await
        .unwrap();
    let gina = UserId::new("gina").unwrap();
    let acme = Tenant::new("acme").unwrap();
    let listed: Vec<_> = store
        .user_sessions(&gina, Some(&acme), t(10))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![old.session.id.clone(), new.session.id.clone()]);
    assert_eq!(
        store.user_sessions(&gina, None, t(10)).await.unwrap().len(),
        3
    );
    assert!(store
        .user_sessions(&UserId::new("nobody").unwrap(), None, t(10))
        .await
        .unwrap()
        .is_empty());
}

pub async fn csrf_hash_only_changes_on_active_sessions(store: Arc<dyn Backend>) {
    let rec = record("hank", "default", 0, 100, 200);
    store.create_session(&rec, None, t(0)).await.unwrap();
    assert_eq!(
        store
            .set_csrf_hash(&rec.session.id, &[5u8; 32], t(10))
            .await
            .unwrap(),
        Some(owner(&rec))
    );
    assert_eq!(
        store
            .session(&rec.session.id)
            .await
            .unwrap()
            .unwrap()
            .csrf_hash,
        Some([5u8; 32])
    );
    assert_eq!(
        store
            .set_csrf_hash(&rec.session.id, &[6u8; 32], t(100))
            .await
            .unwrap(),
        None,
        "idle-expired"
    );
    store
        .revoke_session(&rec.session.id, t(20), &RevokeReason::logout())
        .await
        .unwrap();
    assert_eq!(
        store
            .set_csrf_hash(&rec.session.id, &[6u8; 32], t(30))
            .await
            .unwrap(),
        None,
        "revoked"
    );
    assert_eq!(
        store
            .set_csrf_hash(&SessionId::generate(&rng()), &[6u8; 32], t(30))
            .await
            .unwrap(),
        None,
        "missing"
    );
    assert_eq!(
        store
            .session(&rec.session.id)
            .await
            .unwrap()
            .unwrap()
            .csrf_hash,
        Some([5u8; 32])
    );
}

pub async fn eviction_keeps_the_newest(store: Arc<dyn Backend>) {
    let mut made: Vec<SessionId> = Vec::new();
    let mut owners: Vec<SessionOwner> = Vec::new();
    for i in 0..4 {
        let rec = record("ivy", "default", i, 1000, 2000);
        let evicted = store.create_session(&rec, Some(2), t(i)).await.unwrap();
        match i {
            0 | 1 => assert!(evicted.is_empty()),
            _ => assert_eq!(
                evicted,
                vec![owners[(i - 2) as usize].clone()],
                "the oldest goes first"
            ),
        }
        made.push(rec.session.id.clone());
        owners.push(owner(&rec));
    }
    let evicted = store.session(&made[0]).await.unwrap().unwrap().session;
    assert_eq!(
        evicted.revoke_reason.as_ref().map(RevokeReason::as_str),
        Some("evicted")
    );
    let ivy = UserId::new("ivy").unwrap();
    let active: Vec<_> = store
        .user_sessions(&ivy, None, t(5))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(active, made[2..].to_vec());
    // Another tenant of the same user counts apart and is never evicted for this one.
    let elsewhere = record("ivy", "globex", 0, 1000, 2000);
    assert!(store
        .create_session(&elsewhere, Some(1), t(3))
        .await
        .unwrap()
        .is_empty());
    // Same instant: the new session is never the one evicted.
    let same = record("ivy", "default", 3, 1000, 2000);
    let evicted = store.create_session(&same, Some(1), t(3)).await.unwrap();
    assert_eq!(
        sorted(evicted),
        sorted(owners[2..].to_vec()),
        "the new session is kept; both others go"
    );
}

pub async fn concurrent_creates_respect_the_limit(store: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let rec = record("jack", "default", i, 1000, 2000);
            store.create_session(&rec, Some(3), t(30)).await.unwrap()
        }));
    }
    let mut evicted = 0;
    for task in tasks {
        evicted += task.await.unwrap().len();
    }
    let jack = UserId::new("jack").unwrap();
    assert_eq!(
        store.user_sessions(&jack, None, t(40)).await.unwrap().len(),
        3
    );
    assert_eq!(
        evicted, 21,
        "every session beyond the limit was evicted exactly once"
    );
}

pub async fn gc_deletes_expired_in_bounded_batches(store: Arc<dyn Backend>) {
    let mut live = Vec::new();
    for i in 0..7 {
        store
            .create_session(&record("kim", "default", 0, 10 + i, 1000), None, t(0))
            .await
            .unwrap();
        store
            .create_session(&record("kim", "default", 0, 1000, 10 + i), None, t(0))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let rec = record("kim", "default", 0, 1000, 2000);
        store.create_session(&rec, None, t(0)).await.unwrap();
        live.push(rec.session.id);
    }
    assert_eq!(store.delete_expired_sessions(t(100), 5).await.unwrap(), 5);
    assert_eq!(store.delete_expired_sessions(t(100), 5).await.unwrap(), 5);
    assert_eq!(store.delete_expired_sessions(t(100), 5).await.unwrap(), 4);
    assert_eq!(store.delete_expired_sessions(t(100), 5).await.unwrap(), 0);
    for id in &live {
        assert!(store.session(id).await.unwrap().is_some());
    }
    // The boundary: a session whose expiry is exactly now is expired.
    store
        .create_session(&record("kim", "default", 0, 200, 1000), None, t(0))
        .await
        .unwrap();
    assert_eq!(store.delete_expired_sessions(t(199), 5).await.unwrap(), 0);
    assert_eq!(store.delete_expired_sessions(t(200), 5).await.unwrap(), 1);
}

fn key_record(purpose: KeyPurpose, created: i64) -> KeyRecord {
    KeyRecord {
        id: key_id(),
        purpose,
        algorithm: if purpose == KeyPurpose::Access {
            KeyAlgorithm::EdDsa
        } else {
            KeyAlgorithm::Hs256
        },
        created_at: t(created),
        retired_at: None,
        verify_until: None,
        public_key: (purpose == KeyPurpose::Access).then(|| vec![1u8; 32]),
        sealed: vec![1, 2, 3, 4],
        origin: KeyOrigin::Generated,
        fingerprint: None,
    }
}

/// An operator key: its material's fingerprint is `[fp; 32]`.
fn operator_key(purpose: KeyPurpose, created: i64, fp: u8) -> KeyRecord {
    KeyRecord {
        origin: KeyOrigin::Operator,
        fingerprint: Some(Fingerprint::from_bytes([fp; 32])),
        ..key_record(purpose, created)
    }
}

fn active_keys(keys: &[KeyRecord], purpose: KeyPurpose) -> Vec<KeyId> {
    keys.iter()
        .filter(|k| k.purpose == purpose && k.retired_at.is_none())
        .map(|k| k.id.clone())
        .collect()
}

/// With an expected active key, a rotation happens only while that key is still the active
/// one: of several nodes replacing the key they saw, exactly one wins and the others change
/// nothing (issue 12 item 3: concurrent starts converge).
pub async fn rotation_is_a_compare_and_swap_on_the_active_key(store: Arc<dyn Backend>) {
    let a = key_record(KeyPurpose::Access, 0);
    store.insert_first_active_key(&a).await.unwrap();
    let b = key_record(KeyPurpose::Access, 1);
    assert!(store
        .rotate_key(&b, t(1), t(50), Some(&a.id))
        .await
        .unwrap());
    let stale = key_record(KeyPurpose::Access, 2);
    assert!(!store
        .rotate_key(&stale, t(2), t(60), Some(&a.id))
        .await
        .unwrap());
    let keys = store.keys().await.unwrap();
    assert!(
        !keys.iter().any(|k| k.id == stale.id),
        "a lost swap inserts nothing"
    );
    assert_eq!(active_keys(&keys, KeyPurpose::Access), vec![b.id.clone()]);
    let old = keys.iter().find(|k| k.id == a.id).unwrap();
    assert_eq!(old.verify_until, Some(t(50)), "a lost swap retires nothing");

    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, expected) = (store.clone(), b.id.clone());
        tasks.push(tokio::spawn(async move {
            s.rotate_key(
                &key_record(KeyPurpose::Access, 10 + i),
                t(10),
                t(100),
                Some(&expected),
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 3, "only the winner inserted its key");
    assert_eq!(active_keys(&keys, KeyPurpose::Access).len(), 1);
}

/// Retiring an operator key records its fingerprint in the same step, and the record outlives
/// the key's row (collection): retired operator material is recognised for good. Generated keys
/// leave no record; the fingerprint round-trips on the key row.
pub async fn retired_operator_fingerprints_outlive_their_keys(store: Arc<dyn Backend>) {
    let fp = Fingerprint::from_bytes([7; 32]);
    let operator = operator_key(KeyPurpose::Access, 0, 7);
    store.insert_first_active_key(&operator).await.unwrap();
    assert!(store.keys().await.unwrap().contains(&operator));
    assert_eq!(store.retired_operator_key(&fp).await.unwrap(), None);

    let generated = key_record(KeyPurpose::Access, 1);
    assert!(store
        .rotate_key(&generated, t(1), t(10), Some(&operator.id))
        .await
        .unwrap());
    assert_eq!(
        store.retired_operator_key(&fp).await.unwrap(),
        Some(operator.id.clone())
    );
    // A generated key retiring records nothing.
    store
        .rotate_key(&key_record(KeyPurpose::Access, 2), t(2), t(10), None)
        .await
        .unwrap();
    assert_eq!(store.delete_expired_keys(t(10), 10).await.unwrap(), 2);
    assert!(!store
        .keys()
        .await
        .unwrap()
        .iter()
        .any(|k| k.id == operator.id));
    assert_eq!(
        store.retired_operator_key(&fp).await.unwrap(),
        Some(operator.id.clone()),
        "the record outlives the collected row"
    );
    assert_eq!(
        store
            .retired_operator_key(&Fingerprint::from_bytes([8; 32]))
            .await
            .unwrap(),
        None
    );
}

/// Ending a key at once: the active key is retired with `verify_until = at` and the
/// replacement becomes active in the same step; a retained key stops at `at`; a key that has
/// stopped is left alone; an unknown id (or another purpose's) changes nothing. Concurrent ends
/// of the active key make one replacement.
pub async fn ending_a_key_is_atomic_and_idempotent(store: Arc<dyn Backend>) {
    let operator = operator_key(KeyPurpose::Access, 0, 9);
    store.insert_first_active_key(&operator).await.unwrap();
    let replacement = key_record(KeyPurpose::Access, 5);
    assert_eq!(
        store
            .end_key(&operator.id, KeyPurpose::Access, t(5), &replacement)
            .await
            .unwrap(),
        KeyEnding::EndedActive
    );
    let keys = store.keys().await.unwrap();
    let ended = keys.iter().find(|k| k.id == operator.id).unwrap();
    assert_eq!(
        (ended.retired_at, ended.verify_until),
        (Some(t(5)), Some(t(5)))
    );
    assert_eq!(
        active_keys(&keys, KeyPurpose::Access),
        vec![replacement.id.clone()]
    );
    assert_eq!(
        store
            .retired_operator_key(&Fingerprint::from_bytes([9; 32]))
            .await
            .unwrap(),
        Some(operator.id.clone())
    );

    // A retained key stops now; the replacement offered is not stored.
    store
        .rotate_key(&key_record(KeyPurpose::Access, 10), t(10), t(100), None)
        .await
        .unwrap();
    let unused = key_record(KeyPurpose::Access, 20);
    assert_eq!(
        store
            .end_key(&replacement.id, KeyPurpose::Access, t(20), &unused)
            .await
            .unwrap(),
        KeyEnding::EndedRetired
    );
    let keys = store.keys().await.unwrap();
    let retained = keys.iter().find(|k| k.id == replacement.id).unwrap();
    assert_eq!(
        (retained.retired_at, retained.verify_until),
        (Some(t(10)), Some(t(20)))
    );
    assert!(!keys.iter().any(|k| k.id == unused.id));
    for (id, purpose, expected) in [
        (&replacement.id, KeyPurpose::Access, KeyEnding::AlreadyEnded),
        (&operator.id, KeyPurpose::Access, KeyEnding::AlreadyEnded),
        (&replacement.id, KeyPurpose::Cookie, KeyEnding::NotFound),
        (&key_id(), KeyPurpose::Access, KeyEnding::NotFound),
    ] {
        assert_eq!(
            store.end_key(id, purpose, t(30), &unused).await.unwrap(),
            expected,
            "{id} {purpose}"
        );
    }
    assert_eq!(store.keys().await.unwrap(), keys, "nothing changed");

    let active = active_keys(&keys, KeyPurpose::Access).remove(0);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (s, id) = (store.clone(), active.clone());
        tasks.push(tokio::spawn(async move {
            s.end_key(
                &id,
                KeyPurpose::Access,
                t(40),
                &key_record(KeyPurpose::Access, 40 + i),
            )
            .await
            .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == KeyEnding::EndedActive)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, KeyEnding::EndedActive | KeyEnding::AlreadyEnded)));
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 4, "one replacement was stored");
    assert_eq!(active_keys(&keys, KeyPurpose::Access).len(), 1);
}

/// A key adopted before origins were recorded is recorded as an operator key once, only while
/// it is active, and its fingerprint is recorded when it retires.
pub async fn a_generated_key_is_recorded_as_operator_once(store: Arc<dyn Backend>) {
    let legacy = key_record(KeyPurpose::Access, 0);
    store.insert_first_active_key(&legacy).await.unwrap();
    let fp = Fingerprint::from_bytes([4; 32]);
    assert!(store.record_operator_key(&legacy.id, &fp).await.unwrap());
    assert!(!store
        .record_operator_key(&legacy.id, &Fingerprint::from_bytes([5; 32]))
        .await
        .unwrap());
    let stored = store.keys().await.unwrap().remove(0);
    assert_eq!(
        (stored.origin, stored.fingerprint),
        (KeyOrigin::Operator, Some(fp))
    );
    store
        .rotate_key(&key_record(KeyPurpose::Access, 1), t(1), t(10), None)
        .await
        .unwrap();
    assert_eq!(
        store.retired_operator_key(&fp).await.unwrap(),
        Some(legacy.id.clone())
    );
    let retired = key_record(KeyPurpose::Cookie, 0);
    store.insert_first_active_key(&retired).await.unwrap();
    store
        .rotate_key(&key_record(KeyPurpose::Cookie, 1), t(1), t(10), None)
        .await
        .unwrap();
    assert!(
        !store.record_operator_key(&retired.id, &fp).await.unwrap(),
        "only an active key"
    );
}

pub async fn first_active_key_is_inserted_once(store: Arc<dyn Backend>) {
    let first = key_record(KeyPurpose::Cookie, 0);
    assert!(store.insert_first_active_key(&first).await.unwrap());
    assert!(!store
        .insert_first_active_key(&key_record(KeyPurpose::Cookie, 1))
        .await
        .unwrap());
    assert!(store
        .insert_first_active_key(&key_record(KeyPurpose::Access, 1))
        .await
        .unwrap());
    let keys = store.keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&first), "stored key differs: {keys:?}");
}

pub async fn concurrent_key_bootstrap_has_one_winner(store: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .insert_first_active_key(&key_record(KeyPurpose::Refresh, i))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    let active = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.retired_at.is_none())
        .count();
    assert_eq!(active, 1);
}

pub async fn rotation_retires_and_replaces(store: Arc<dyn Backend>) {
    let first = key_record(KeyPurpose::Cookie, 0);
    store.insert_first_active_key(&first).await.unwrap();
    let second = key_record(KeyPurpose::Cookie, 10);
    store
        .rotate_key(&second, t(10), t(100), None)
        .await
        .unwrap();
    let keys = store.keys().await.unwrap();
    let old = keys.iter().find(|k| k.id == first.id).unwrap();
    assert_eq!(
        (old.retired_at, old.verify_until),
        (Some(t(10)), Some(t(100)))
    );
    let new = keys.iter().find(|k| k.id == second.id).unwrap();
    assert_eq!((new.retired_at, new.verify_until), (None, None));
    // Concurrent rotations: always exactly one active key afterwards.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .rotate_key(
                    &key_record(KeyPurpose::Cookie, 20 + i),
                    t(20 + i),
                    t(200),
                    None,
                )
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let active: Vec<_> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.purpose == KeyPurpose::Cookie && k.retired_at.is_none())
        .collect();
    assert_eq!(active.len(), 1);
}

pub async fn retired_keys_past_retention_are_collected(store: Arc<dyn Backend>) {
    let first = key_record(KeyPurpose::Access, 0);
    store.insert_first_active_key(&first).await.unwrap();
    let second = key_record(KeyPurpose::Access, 10);
    store
        .rotate_key(&second, t(10), t(100), None)
        .await
        .unwrap();
    assert_eq!(store.delete_expired_keys(t(99), 10).await.unwrap(), 0);
    assert_eq!(store.delete_expired_keys(t(100), 10).await.unwrap(), 1);
    let ids: Vec<_> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, vec![second.id], "the active key is never collected");
}

pub async fn audit_appends_and_filters(store: Arc<dyn Backend>) {
    let sid = SessionId::generate(&rng());
    let mut created = AuditRecord::new(t(1), AuditEvent::SessionCreated, "cookie")
        .session(&sid)
        .ip(Some("192.0.2.1"));
    created.user_id = Some(UserId::new("lee").unwrap());
    created.tenant = Some(Tenant::default());
    created.key_id = Some(key_id());
    store.append_audit(&created).await.unwrap();
    let revoked = AuditRecord::new(t(2), AuditEvent::SessionRevoked, "logout").session(&sid);
    store.append_audit(&revoked).await.unwrap();
    store
        .append_audit(&AuditRecord::new(
            t(3),
            AuditEvent::ValidationFailed,
            "bad_mac",
        ))
        .await
        .unwrap();

    let about = store
        .audit_records(&AuditQuery::session(&sid))
        .await
        .unwrap();
    assert_eq!(
        about,
        vec![revoked.clone(), created.clone()],
        "newest first, every field kept"
    );
    let latest = store.audit_records(&AuditQuery::latest(2)).await.unwrap();
    assert_eq!(latest.len(), 2);
    assert_eq!(latest[0].reason, "bad_mac");
}

pub async fn claim_is_once_until_expiry(store: Arc<dyn ClaimStore>) {
    let id = "claim-a";
    assert_eq!(
        store.claim(id, t(100), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(id, t(100), t(1)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
    assert_eq!(
        store.claim(id, t(500), t(99)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
    // The boundary: a claim whose expiry is now is expired and records nothing.
    assert_eq!(
        store.claim("claim-b", t(10), t(10)).await.unwrap(),
        ClaimOutcome::Expired
    );
    assert_eq!(
        store.claim("claim-b", t(20), t(10)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    // Once the first record has expired (collected or not), the id can be claimed afresh.
    assert_eq!(
        store.claim(id, t(300), t(100)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        store.claim(id, t(300), t(150)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
}

pub async fn concurrent_claims_have_one_winner(store: Arc<dyn ClaimStore>) {
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim("contested", t(60), t(0)).await.unwrap()
        }));
    }
    let mut claimed = 0;
    let mut used = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::AlreadyUsed => used += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((claimed, used), (1, 99));
}

/// What every claim store owes its GC sweep: whether or not it collects anything, an expired
/// claim frees its id, and a live claim survives the sweep.
pub async fn expired_claims_can_be_claimed_again(store: Arc<dyn ClaimStore>) {
    for i in 0..7 {
        assert_eq!(
            store
                .claim(&format!("old-{i}"), t(10 + i), t(0))
                .await
                .unwrap(),
            ClaimOutcome::Claimed
        );
    }
    store.claim("fresh", t(1000), t(0)).await.unwrap();
    // A store that relies on its own expiry (Redis) may collect nothing here.
    for _ in 0..4 {
        if store.delete_expired_claims(t(100), 4).await.unwrap() < 4 {
            break;
        }
    }
    assert_eq!(
        store.claim("fresh", t(1000), t(100)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
    for i in 0..7 {
        let id = format!("old-{i}");
        assert_eq!(
            store.claim(&id, t(200), t(100)).await.unwrap(),
            ClaimOutcome::Claimed,
            "{id} expired at {:?}",
            t(10 + i)
        );
        assert_eq!(
            store.claim(&id, t(200), t(101)).await.unwrap(),
            ClaimOutcome::AlreadyUsed
        );
    }
}

/// SQL backends: the sweep deletes expired claim rows in bounded batches and counts them.
pub async fn expired_claims_are_collected(store: Arc<dyn Backend>) {
    for i in 0..7 {
        store
            .claim(&format!("old-{i}"), t(10 + i), t(0))
            .await
            .unwrap();
    }
    store.claim("fresh", t(1000), t(0)).await.unwrap();
    assert_eq!(store.delete_expired_claims(t(100), 4).await.unwrap(), 4);
    assert_eq!(store.delete_expired_claims(t(100), 4).await.unwrap(), 3);
    assert_eq!(store.delete_expired_claims(t(100), 4).await.unwrap(), 0);
    assert_eq!(
        store.claim("fresh", t(1000), t(100)).await.unwrap(),
        ClaimOutcome::AlreadyUsed
    );
}

fn token_record(hash: [u8; 32]) -> SessionRecord {
    let mut rec = record("tess", "default", 0, 1000, 2000);
    rec.session.kind = SessionKind::Tokens;
    rec.csrf_hash = None;
    rec.refresh = Some(RefreshState {
        hash,
        generation: 0,
        used: false,
        chain: Vec::new(),
    });
    rec
}

pub async fn refresh_rotation_is_compare_and_swap(store: Arc<dyn Backend>) {
    let rec = token_record([1; 32]);
    let id = &rec.session.id;
    store.create_session(&rec, None, t(0)).await.unwrap();
    let chain1: &[RefreshStep] = &[step(1, 0, 10)];
    let chain2: &[RefreshStep] = &[step(1, 0, 10), step(2, 1, 11)];
    fn rotation<'a>(
        id: &'a SessionId,
        expected_hash: &'a [u8; 32],
        new_hash: &'a [u8; 32],
        generation: u64,
        chain: &'a [RefreshStep],
        now: i64,
    ) -> RefreshRotation<'a> {
        RefreshRotation {
            id,
            expected_hash,
            only_if_unused: false,
            new_hash,
            generation,
            chain,
            now: t(now),
            idle_expires_at: t(now + 1000),
        }
    }
    assert!(
        !store
            .rotate_refresh(rotation(id, &[9; 32], &[2; 32], 1, chain1, 10))
            .await
            .unwrap(),
        "wrong expected hash"
    );
    assert!(store
        .rotate_refresh(rotation(id, &[1; 32], &[2; 32], 1, chain1, 10))
        .await
        .unwrap());
    let back = store.session(id).await.unwrap().unwrap();
    let refresh = back.refresh.unwrap();
    assert_eq!(
        (
            refresh.hash,
            refresh.generation,
            refresh.used,
            refresh.chain
        ),
        ([2; 32], 1, false, chain1.to_vec())
    );
    assert_eq!(back.session.last_seen_at, t(10));
    assert_eq!(back.session.idle_expires_at, t(1010));
    assert!(
        !store
            .rotate_refresh(rotation(id, &[1; 32], &[3; 32], 2, chain2, 11))
            .await
            .unwrap(),
        "the old hash no longer swaps"
    );
    // The idle expiry is capped at the absolute one.
    let capped = RefreshRotation {
        idle_expires_at: t(5000),
        ..rotation(id, &[2; 32], &[3; 32], 2, chain2, 900)
    };
    assert!(store.rotate_refresh(capped).await.unwrap());
    let s = store.session(id).await.unwrap().unwrap();
    assert_eq!(s.session.idle_expires_at, t(2000));
    assert_eq!(s.refresh.unwrap().chain, chain2.to_vec());
    store
        .revoke_session(id, t(1600), &RevokeReason::refresh_token_reused())
        .await
        .unwrap();
    assert!(
        !store
            .rotate_refresh(rotation(id, &[3; 32], &[4; 32], 3, chain2, 1700))
            .await
            .unwrap(),
        "revoked"
    );
    let expired = token_record([5; 32]);
    store.create_session(&expired, None, t(0)).await.unwrap();
    let late = RefreshRotation {
        id: &expired.session.id,
        expected_hash: &[5; 32],
        only_if_unused: false,
        new_hash: &[6; 32],
        generation: 1,
        chain: chain1,
        now: t(2000),
        idle_expires_at: t(3000),
    };
    assert!(!store.rotate_refresh(late).await.unwrap(), "expired");
}

/// The first use of a pair is recorded once, only for the current generation; a rotation
/// resets it; a re-issue (`only_if_unused`) loses to a recorded use.
pub async fn refresh_use_is_recorded_once_per_pair(store: Arc<dyn Backend>) {
    let rec = token_record([1; 32]);
    let id = &rec.session.id;
    store.create_session(&rec, None, t(0)).await.unwrap();
    assert!(
        !store.mark_refresh_used(id, 1).await.unwrap(),
        "not current"
    );
    assert!(store.mark_refresh_used(id, 0).await.unwrap());
    assert!(!store.mark_refresh_used(id, 0).await.unwrap(), "once");
    let used = |store: Arc<dyn Backend>| async move {
        store
            .session(id)
            .await
            .unwrap()
            .unwrap()
            .refresh
            .unwrap()
            .used
    };
    assert!(used(store.clone()).await);
    let chain = [step(1, 0, 5)];
    let reissue = RefreshRotation {
        id,
        expected_hash: &[1; 32],
        only_if_unused: true,
        new_hash: &[2; 32],
        generation: 1,
        chain: &chain,
        now: t(5),
        idle_expires_at: t(900),
    };
    assert!(
        !store.rotate_refresh(reissue).await.unwrap(),
        "a re-issue loses to a used pair"
    );
    let rotate = RefreshRotation {
        only_if_unused: false,
        ..reissue
    };
    assert!(store.rotate_refresh(rotate).await.unwrap());
    assert!(!used(store.clone()).await, "a new pair starts unused");
    let chain2 = [step(2, 0, 6)];
    let reissue = RefreshRotation {
        expected_hash: &[2; 32],
        new_hash: &[3; 32],
        generation: 2,
        chain: &chain2,
        now: t(6),
        ..reissue
    };
    assert!(store.rotate_refresh(reissue).await.unwrap());
    assert!(!store.mark_refresh_used(id, 1).await.unwrap(), "abandoned");
    assert!(store.mark_refresh_used(id, 2).await.unwrap());
}

pub async fn concurrent_refresh_rotations_have_one_winner(store: Arc<dyn Backend>) {
    let rec = token_record([1; 32]);
    store.create_session(&rec, None, t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let store = store.clone();
        let id = rec.session.id.clone();
        tasks.push(tokio::spawn(async move {
            let new = [i.wrapping_add(100); 32];
            let chain = [step(1, 0, 5)];
            let r = RefreshRotation {
                id: &id,
                expected_hash: &[1; 32],
                only_if_unused: i % 2 == 0,
                new_hash: &new,
                generation: 1,
                chain: &chain,
                now: t(5),
                idle_expires_at: t(900),
            };
            store.rotate_refresh(r).await.unwrap()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(
        store
            .session(&rec.session.id)
            .await
            .unwrap()
            .unwrap()
            .refresh
            .unwrap()
            .generation,
        1
    );
}

/// Not in [`conformance_suite!`]: the API-key table is a capability of the SQL stores, not of
/// every `Backend`; `sqlite.rs` and `postgres.rs` run it.
pub async fn api_keys_are_stored_by_hash_and_revoked_once(store: Arc<dyn ApiKeyStore>) {
    let key = |name: &str, hash: u8, created: i64| ApiKeyRecord {
        id: sessiond::ApiKeyId::generate(&rng()),
        name: name.into(),
        scope: ApiKeyScope::Admin,
        hash: [hash; 32],
        created_at: t(created),
        revoked_at: None,
    };
    // The scope round-trips.
    let (a, b) = (
        key("backend", 1, 0),
        ApiKeyRecord {
            scope: ApiKeyScope::Verify,
            ..key("resource server", 2, 5)
        },
    );
    store.insert_api_key(&b).await.unwrap();
    store.insert_api_key(&a).await.unwrap();
    assert!(
        store.insert_api_key(&key("dup", 1, 9)).await.is_err(),
        "hashes are unique"
    );
    assert_eq!(
        store.api_key_by_hash(&[1; 32]).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.api_key_by_hash(&[3; 32]).await.unwrap(), None);
    assert_eq!(store.api_keys().await.unwrap(), vec![a.clone(), b.clone()]);
    assert!(store.revoke_api_key(&a.id, t(10)).await.unwrap());
    assert!(!store.revoke_api_key(&a.id, t(11)).await.unwrap());
    assert!(!store
        .revoke_api_key(&sessiond::ApiKeyId::generate(&rng()), t(11))
        .await
        .unwrap());
    assert_eq!(
        store
            .api_key_by_hash(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(t(10))
    );
}

pub async fn concurrent_revokes_have_one_winner(store: Arc<dyn Backend>) {
    let rec = record("quinn", "default", 0, 1000, 2000);
    store.create_session(&rec, None, t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let id = rec.session.id.clone();
        tasks.push(tokio::spawn(async move {
            let outcome = store
                .revoke_session(&id, t(10 + i), &RevokeReason::logout())
                .await
                .unwrap();
            (i, outcome)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Revocation::Revoked(o)) => {
                assert_eq!(o, owner(&rec));
                winners.push(i);
            }
            (_, Revocation::AlreadyRevoked) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let s = store
        .session(&rec.session.id)
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(s.revoked_at, Some(t(10 + winners[0])), "the winner's time");
}

pub async fn concurrent_touches_write_once(store: Arc<dyn Backend>) {
    let rec = record("rosa", "default", 0, 1000, 2000);
    store.create_session(&rec, None, t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let id = rec.session.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .touch_session(&id, t(60 + i), t(1060 + i), t(0))
                .await
                .unwrap()
        }));
    }
    let mut writes = 0;
    for task in tasks {
        writes += usize::from(task.await.unwrap());
    }
    assert_eq!(writes, 1, "one write per staleness bound");
}

/// Creates under a limit race revoke-alls and GC for one user: every call succeeds (no
/// deadlock, no lock error), every session ends up in exactly one place (still active, evicted
/// by exactly one create, or revoked by exactly one revoke-all), and the limit holds.
pub async fn concurrent_evictions_and_revocations_settle_every_session_once(
    store: Arc<dyn Backend>,
) {
    use std::collections::HashSet;

    let user = UserId::new("sam").unwrap();
    let mut creates = Vec::new();
    let mut revokes = Vec::new();
    let mut made = HashSet::new();
    for i in 0..24 {
        let rec = record("sam", "default", i, 1000, 2000);
        made.insert(rec.session.id.clone());
        let s = store.clone();
        creates.push(tokio::spawn(async move {
            s.create_session(&rec, Some(2), t(30)).await.unwrap()
        }));
        if i % 3 == 0 {
            let (s, user) = (store.clone(), user.clone());
            revokes.push(tokio::spawn(async move {
                s.revoke_user_sessions(&user, None, None, t(30), &RevokeReason::revoked_all())
                    .await
                    .unwrap()
            }));
            let s = store.clone();
            tokio::spawn(async move { s.delete_expired_sessions(t(30), 10).await.unwrap() });
        }
    }
    let mut settled = Vec::new();
    for task in creates.into_iter().chain(revokes) {
        for owner in task.await.unwrap() {
            assert_eq!((&owner.user_id, owner.tenant.as_str()), (&user, "default"));
            settled.push(owner.id);
        }
    }
    settled.extend(
        store
            .user_sessions(&user, None, t(40))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id),
    );
    let unique: HashSet<_> = settled.iter().cloned().collect();
    assert_eq!(unique.len(), settled.len(), "a session was settled twice");
    assert_eq!(unique, made, "every session is active, evicted or revoked");
    assert!(store.user_sessions(&user, None, t(40)).await.unwrap().len() <= 2);
}

/// Bootstraps and rotations of one purpose race: none fails (in particular not on the
/// one-active-key index), exactly one bootstrap can win and only before any rotation, and
/// exactly one key is active afterwards.
pub async fn concurrent_bootstrap_and_rotations_leave_one_active_key(store: Arc<dyn Backend>) {
    let mut bootstraps = Vec::new();
    let mut rotations = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        bootstraps.push(tokio::spawn(async move {
            s.insert_first_active_key(&key_record(KeyPurpose::Access, i))
                .await
                .unwrap()
        }));
        let s = store.clone();
        rotations.push(tokio::spawn(async move {
            s.rotate_key(
                &key_record(KeyPurpose::Access, 10 + i),
                t(10 + i),
                t(100),
                None,
            )
            .await
            .unwrap()
        }));
    }
    let mut winners = 0;
    for task in bootstraps {
        winners += usize::from(task.await.unwrap());
    }
    for task in rotations {
        task.await.unwrap();
    }
    assert!(winners <= 1);
    let keys: Vec<_> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.purpose == KeyPurpose::Access)
        .collect();
    assert_eq!(keys.len(), 8 + winners, "every rotation inserted its key");
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1);
}

pub async fn concurrent_reclaims_of_an_expired_claim_have_one_winner(store: Arc<dyn Backend>) {
    assert_eq!(
        store.claim("again", t(10), t(0)).await.unwrap(),
        ClaimOutcome::Claimed
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
        if i % 10 == 0 {
            tokio::spawn(async move { s.delete_expired_claims(t(20), 10).await.unwrap() });
            continue;
        }
        tasks.push(tokio::spawn(async move {
            s.claim("again", t(100), t(20)).await.unwrap()
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            ClaimOutcome::Claimed => claimed += 1,
            ClaimOutcome::AlreadyUsed => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(claimed, 1, "the expired leftover is replaced exactly once");
}

/// Stored defects and how every SQL backend must report them: `StoreError::Corrupt` naming the
/// `table.column`, whatever the kind of defect. Each statement (raw SQL valid in both dialects,
/// for defects both schemas admit) is applied to a fresh row; the row's id replaces `{id}`.
pub const CORRUPT_ROWS: &[(&str, &str)] = &[
    (
        "UPDATE sessions SET user_id = '' WHERE id = '{id}'",
        "sessions.user_id",
    ),
    (
        "UPDATE sessions SET tenant = '' WHERE id = '{id}'",
        "sessions.tenant",
    ),
    (
        "UPDATE sessions SET key_id = 'not a key' WHERE id = '{id}'",
        "sessions.key_id",
    ),
    (
        "UPDATE sessions SET claims = 'not json' WHERE id = '{id}'",
        "sessions.claims",
    ),
    (
        "UPDATE sessions SET revoke_reason = 'Not A Code' WHERE id = '{id}'",
        "sessions.revoke_reason",
    ),
    (
        "UPDATE sessions SET refresh_hash = csrf_hash, refresh_generation = -1 WHERE id = '{id}'",
        "sessions.refresh_generation",
    ),
    (
        "UPDATE sessions SET refresh_hash = csrf_hash, refresh_chain = 'garbage' \
         WHERE id = '{id}'",
        "sessions.refresh_chain",
    ),
    (
        "UPDATE signing_keys SET algorithm = 'nope' WHERE id = '{id}'",
        "signing_keys.algorithm",
    ),
    (
        "UPDATE audit_log SET event = 'nope' WHERE session_id = '{id}'",
        "audit_log.event",
    ),
    (
        "UPDATE api_keys SET id = 'not an id' WHERE id = '{id}'",
        "api_keys.id",
    ),
];

/// Applies each of `defects` (see [`CORRUPT_ROWS`]) to a fresh row with `corrupt` and checks
/// that reading it back reports the defect's column as corrupt.
pub async fn corrupt_rows_are_reported_by_column<S, F, Fut>(
    store: Arc<S>,
    defects: &[(&str, &str)],
    mut corrupt: F,
) where
    S: Backend + ApiKeyStore,
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (i, (sql, what)) in defects.iter().enumerate() {
        let rec = record("corrupt", "default", 0, 1000, 2000);
        let id = rec.session.id.clone();
        store.create_session(&rec, None, t(0)).await.unwrap();
        let key = key_record(KeyPurpose::Access, 0);
        store.rotate_key(&key, t(0), t(100), None).await.unwrap();
        let audit = AuditRecord::new(t(0), AuditEvent::SessionCreated, "cookie").session(&id);
        store.append_audit(&audit).await.unwrap();
        let api_key = ApiKeyRecord {
            id: sessiond::ApiKeyId::generate(&rng()),
            name: "corrupt".into(),
            scope: ApiKeyScope::Admin,
            hash: [u8::try_from(i).unwrap(); 32],
            created_at: t(0),
            revoked_at: None,
        };
        store.insert_api_key(&api_key).await.unwrap();
        let target = match sql.split_whitespace().nth(1) {
            Some("signing_keys") => key.id.as_str().to_owned(),
            Some("api_keys") => api_key.id.as_str().to_owned(),
            _ => id.as_str().to_owned(),
        };
        corrupt(sql.replace("{id}", &target)).await;
        let err = match sql.split_whitespace().nth(1) {
            Some("signing_keys") => store.keys().await.map(drop),
            Some("audit_log") => store
                .audit_records(&AuditQuery::session(&id))
                .await
                .map(drop),
            Some("api_keys") => store.api_keys().await.map(drop),
            _ => store.session(&id).await.map(drop),
        }
        .expect_err(sql);
        assert!(
            matches!(err, StoreError::Corrupt { what: w } if w == *what),
            "{sql}: {err:?}"
        );
        // Leave no corrupt row behind for the next case's listings.
        for table in ["sessions", "signing_keys", "audit_log", "api_keys"] {
            corrupt(format!("DELETE FROM {table}")).await;
        }
    }
}
