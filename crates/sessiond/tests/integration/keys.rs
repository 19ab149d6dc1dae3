//! Signing keys over their life (docs/DESIGN.md §4, issue 12 item 3): operator-supplied material
//! adopted, replaced and withdrawn at start and never taken back, the short life of a retired
//! access key, concurrent starts that converge, and keys ended at once by `retire` — on this
//! node at once, on another node within its key snapshot age.
//!
//! Every case is a generic function over a backend, instantiated for SQLite in `sqlite.rs` and
//! for PostgreSQL in `postgres.rs` with [`keys_suite!`]. Time is a [`ManualClock`]; nothing sleeps.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sessiond::audit::{AuditEvent, AuditQuery};
use sessiond::keys::{
    Fingerprint, KeyAlgorithm, KeyError, KeyInfo, KeyOrigin, KeyPurpose, KeyRefusal,
    OperatorKeyChange,
};
use sessiond::store::Backend;
use sessiond::{
    Clock as _, ManualClock, MasterKey, RequestContext, Secret, SeededRandom, ServiceConfig,
    SessionKind, SessionService, Timestamp,
};
use sha2::{Digest, Sha256};

use crate::common::{secs, user, TestBackend, T0};

/// Instantiates every key case as a `#[tokio::test]` for the backend made by `$factory`.
#[macro_export]
macro_rules! keys_suite {
    ($factory:path) => {
        $crate::keys_suite!(@cases $factory;
            replacing_the_operator_secret_ends_the_old_key_within_the_bound,
            withdrawing_the_operator_secret_rotates_away,
            a_retired_operator_secret_is_refused_for_good,
            a_secret_adopted_before_origins_were_recorded_is_recognised,
            concurrent_starts_converge,
            retire_ends_a_key_here_at_once_and_elsewhere_within_the_snapshot_age,
            the_fingerprint_is_keyed_never_the_secret_or_its_hash,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $factory().await;
                $crate::keys::$case(backend).await;
            }
        )*
    };
}

const MASTER: [u8; 32] = [7u8; 32];
const S1: &str = "operator-secret-one-0123456789abcdef";
const S2: &str = "operator-secret-two-0123456789abcdef";
const S3: &str = "operator-secret-three-0123456789abcd";

fn material(s: &str) -> Secret<Vec<u8>> {
    Secret::new(s.as_bytes().to_vec())
}

/// HS256 access keys; access tokens live 5 min with a 10 s leeway, so a retired access key
/// verifies for 5 min 10 s + 30 s (snapshot age) + 30 s (clock skew) = 370 s.
fn hs256_config() -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.keys.access_algorithm = KeyAlgorithm::Hs256;
    config.tokens.access_ttl = secs(300);
    config.tokens.leeway = secs(10);
    config
}

const BOUND: Duration = Duration::from_secs(370);

/// A node: a service of its own on `store`, reading `clock`.
async fn node(
    store: &Arc<dyn Backend>,
    clock: &ManualClock,
    config: ServiceConfig,
    seed: u64,
) -> SessionService {
    SessionService::builder(store.clone(), MasterKey::from_bytes(MASTER))
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(seed)))
        .config(config)
        .start()
        .await
        .unwrap()
}

/// The server's start: the service, then the operator-key policy with `secret` (or none).
async fn start(
    store: &Arc<dyn Backend>,
    clock: &ManualClock,
    secret: Option<&str>,
    seed: u64,
) -> (SessionService, Result<OperatorKeyChange, KeyError>) {
    let service = node(store, clock, hs256_config(), seed).await;
    let m = secret.map(material);
    let change = service
        .reconcile_operator_key(
            KeyPurpose::Access,
            m.as_ref().map(|m| (KeyAlgorithm::Hs256, m)),
        )
        .await;
    (service, change)
}

async fn active_access(service: &SessionService) -> KeyInfo {
    service
        .keys()
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == KeyPurpose::Access && k.is_active())
        .unwrap()
}

async fn access_token(service: &SessionService) -> String {
    let pair = service
        .create_token_session(user("kim"), SessionKind::Tokens)
        .await
        .unwrap();
    pair.tokens.access_token.expose().clone()
}

async fn validates(service: &SessionService, token: &str) -> Result<(), String> {
    service
        .validate_access_token(token, &RequestContext::default())
        .await
        .map(drop)
        .map_err(|e| e.reason().to_owned())
}

fn at(offset: Duration) -> Timestamp {
    T0.saturating_add(offset)
}

/// Replacing the operator secret retires the old key for the access bound (370 s here), not for
/// `keys.retention` (24 h): a replaced secret may have leaked. Tokens it signed keep validating
/// until their own `exp + leeway`, which is inside the bound.
pub async fn replacing_the_operator_secret_ends_the_old_key_within_the_bound(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let (first, change) = start(&backend.store, &clock, Some(S1), 1).await;
    assert!(
        matches!(change, Ok(OperatorKeyChange::Adopted { .. })),
        "{change:?}"
    );
    let old = active_access(&first).await;
    assert_eq!(old.origin, KeyOrigin::Operator);
    let token = access_token(&first).await;
    // A rotation never replaces operator material with material its resource servers lack.
    assert!(matches!(
        first.rotate_key(KeyPurpose::Access).await,
        Err(sessiond::SessionError::Keys(KeyError::OperatorManaged(
            KeyPurpose::Access
        )))
    ));
    assert_eq!(active_access(&first).await.id, old.id);

    clock.advance(secs(1));
    let (second, change) = start(&backend.store, &clock, Some(S2), 2).await;
    let Ok(OperatorKeyChange::Adopted { key, retired }) = change else {
        panic!("{change:?}");
    };
    assert_eq!(retired.id, old.id);
    assert_eq!(key.origin, KeyOrigin::Operator);
    let until = at(secs(1) + BOUND);
    assert_eq!(retired.verify_until, Some(until));
    let stored = second
        .keys()
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.id == old.id)
        .unwrap();
    assert_eq!(
        (stored.retired_at, stored.verify_until),
        (Some(at(secs(1))), Some(until)),
        "the replaced key verifies for the access bound, not keys.retention"
    );

    // The last token signed by the old key validates until its exp + leeway (inside the bound).
    clock.set(at(secs(309)));
    validates(&second, &token).await.unwrap();
    clock.set(at(secs(310)));
    assert_eq!(
        validates(&second, &token).await,
        Err("token_expired".into())
    );
    // The key itself: verifies one millisecond before the bound, never at it.
    clock.set(until.saturating_sub(Duration::from_millis(1)));
    assert!(second
        .keys()
        .verifier(&old.id, KeyPurpose::Access)
        .await
        .unwrap()
        .is_ok());
    clock.set(until);
    assert_eq!(
        second
            .keys()
            .verifier(&old.id, KeyPurpose::Access)
            .await
            .unwrap()
            .unwrap_err(),
        KeyRefusal::Retired
    );
    // Its expired tokens are still told apart as expired (the client refreshes).
    assert_eq!(
        validates(&second, &token).await,
        Err("token_expired".into())
    );
    let audit = second.audit_records(&AuditQuery::latest(10)).await.unwrap();
    assert!(audit.iter().any(|r| r.event == AuditEvent::KeyRetired
        && r.reason == "operator_replaced"
        && r.key_id.as_ref() == Some(&old.id)));
    assert!(audit.iter().any(|r| r.event == AuditEvent::KeyRotated
        && r.reason == "access"
        && r.key_id.as_ref() == Some(&key.id)));
}

/// A node started without the secret rotates away from the operator key to a generated key of
/// the configured algorithm (HS256 here; EdDSA when `access_alg` changed too), retiring it for
/// the access bound; later starts without it change nothing.
pub async fn withdrawing_the_operator_secret_rotates_away(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let (first, _) = start(&backend.store, &clock, Some(S1), 1).await;
    let operator = active_access(&first).await;
    let token = access_token(&first).await;

    let (second, change) = start(&backend.store, &clock, None, 2).await;
    let Ok(OperatorKeyChange::Withdrawn { key, retired }) = change else {
        panic!("{change:?}");
    };
    assert_eq!(retired.id, operator.id);
    assert_eq!(retired.verify_until, Some(at(BOUND)));
    assert_eq!(
        (key.origin, key.algorithm),
        (KeyOrigin::Generated, KeyAlgorithm::Hs256)
    );
    assert_eq!(active_access(&second).await.id, key.id);
    let fresh = access_token(&second).await;
    assert_ne!(fresh, token);
    validates(&second, &fresh).await.unwrap();
    validates(&second, &token).await.unwrap();
    let audit = second.audit_records(&AuditQuery::latest(10)).await.unwrap();
    assert!(audit.iter().any(|r| r.event == AuditEvent::KeyRetired
        && r.reason == "operator_withdrawn"
        && r.key_id.as_ref() == Some(&operator.id)));

    let (third, change) = start(&backend.store, &clock, None, 3).await;
    assert_eq!(change.unwrap(), OperatorKeyChange::Unchanged);
    assert_eq!(active_access(&third).await.id, key.id);

    // Withdrawing together with a change of algorithm: bootstrap leaves the operator key to the
    // operator-key policy, which rotates to the configured algorithm.
    let (_, _) = start(&backend.store, &clock, Some(S2), 4).await;
    let mut eddsa = hs256_config();
    eddsa.keys.access_algorithm = KeyAlgorithm::EdDsa;
    let node = node(&backend.store, &clock, eddsa, 5).await;
    assert_eq!(
        active_access(&node).await.origin,
        KeyOrigin::Operator,
        "start() alone never withdraws the operator key"
    );
    let change = node
        .reconcile_operator_key(KeyPurpose::Access, None)
        .await
        .unwrap();
    let OperatorKeyChange::Withdrawn { key, .. } = change else {
        panic!("{change:?}");
    };
    assert_eq!(
        (key.origin, key.algorithm),
        (KeyOrigin::Generated, KeyAlgorithm::EdDsa)
    );
}

/// A secret that was replaced, withdrawn or retired is refused at start — nothing changes, and
/// the error names no secret — also after the retired key's row was garbage-collected. A new
/// secret is adopted.
pub async fn a_retired_operator_secret_is_refused_for_good(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let (first, _) = start(&backend.store, &clock, Some(S1), 1).await;
    let k1 = active_access(&first).await;
    let (second, _) = start(&backend.store, &clock, Some(S2), 2).await;
    let k2 = active_access(&second).await;

    let (node, change) = start(&backend.store, &clock, Some(S1), 3).await;
    let err = change.unwrap_err();
    assert!(
        matches!(&err, KeyError::OperatorKeyRetired { purpose: KeyPurpose::Access, key_id: Some(id) } if *id == k1.id),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(S1) && !text.contains("operator-secret"),
        "{text}"
    );
    assert_eq!(active_access(&node).await.id, k2.id, "nothing changed");

    // Past the bound, garbage collection removes the retired row; the refusal stays.
    clock.advance(BOUND);
    assert_eq!(node.gc().await.unwrap().keys, 2, "the bootstrap key and k1");
    assert!(!node
        .keys()
        .list()
        .await
        .unwrap()
        .iter()
        .any(|k| k.id == k1.id));
    let (_, change) = start(&backend.store, &clock, Some(S1), 4).await;
    assert!(
        matches!(change, Err(KeyError::OperatorKeyRetired { .. })),
        "{change:?}"
    );

    // A withdrawn secret is refused as well; a new one is adopted.
    let (_, change) = start(&backend.store, &clock, None, 5).await;
    assert!(
        matches!(change, Ok(OperatorKeyChange::Withdrawn { .. })),
        "{change:?}"
    );
    let (_, change) = start(&backend.store, &clock, Some(S2), 6).await;
    assert!(
        matches!(change, Err(KeyError::OperatorKeyRetired { key_id: Some(ref id), .. }) if *id == k2.id),
        "{change:?}"
    );
    let (node, change) = start(&backend.store, &clock, Some(S3), 7).await;
    assert!(
        matches!(change, Ok(OperatorKeyChange::Adopted { .. })),
        "{change:?}"
    );
    assert_eq!(active_access(&node).await.origin, KeyOrigin::Operator);
}

/// A key adopted before origins were recorded (migrated as `generated`) is recognised by its
/// material at the first start: recorded as an operator key, so a later replacement records it
/// as retired. A legacy key that was already replaced is refused by its material while its row
/// is kept. (The legacy rows are made from the records of another store under the same master
/// key, with the origin taken away.)
pub async fn a_secret_adopted_before_origins_were_recorded_is_recognised(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let donor = crate::common::sqlite_backend().await;
    let (_, _) = start(&donor.store, &clock, Some(S1), 1).await;
    clock.advance(secs(1));
    let (_, _) = start(&donor.store, &clock, Some(S2), 2).await;
    let legacy = |secret_rank: usize| {
        let store = donor.store.clone();
        async move {
            let mut ops: Vec<_> = store
                .keys()
                .await
                .unwrap()
                .into_iter()
                .filter(|k| k.origin == KeyOrigin::Operator)
                .collect();
            ops.sort_by_key(|k| k.created_at);
            let mut record = ops.remove(secret_rank);
            record.origin = KeyOrigin::Generated;
            record.fingerprint = None;
            record.retired_at = None;
            record.verify_until = None;
            record
        }
    };
    let (k1, k2) = (legacy(0).await, legacy(1).await);

    // The database as an earlier version left it: S1 adopted, then replaced by S2.
    let store = &backend.store;
    assert!(store.insert_first_active_key(&k1).await.unwrap());
    store
        .rotate_key(&k2, T0, at(secs(24 * 3600)), None)
        .await
        .unwrap();

    let (node, change) = start(store, &clock, Some(S2), 3).await;
    assert_eq!(
        change.unwrap(),
        OperatorKeyChange::Recorded { key: k2.id.clone() }
    );
    let active = active_access(&node).await;
    assert_eq!(
        (active.id.clone(), active.origin),
        (k2.id.clone(), KeyOrigin::Operator)
    );
    let stored = store.keys().await.unwrap();
    let recorded = stored.iter().find(|k| k.id == k2.id).unwrap();
    assert_eq!(
        recorded.fingerprint,
        Some(Fingerprint::of(
            &MasterKey::from_bytes(MASTER),
            KeyPurpose::Access,
            KeyAlgorithm::Hs256,
            S2.as_bytes()
        ))
    );
    let (_, change) = start(store, &clock, Some(S2), 4).await;
    assert_eq!(change.unwrap(), OperatorKeyChange::Unchanged);

    // The legacy S1 key was replaced before fingerprints existed: refused by its material.
    let (_, change) = start(store, &clock, Some(S1), 5).await;
    assert!(
        matches!(change, Err(KeyError::OperatorKeyRetired { key_id: Some(ref id), .. }) if *id == k1.id),
        "{change:?}"
    );
    // S2, now recorded, retires with its fingerprint when replaced.
    let (_, change) = start(store, &clock, Some(S3), 6).await;
    assert!(
        matches!(change, Ok(OperatorKeyChange::Adopted { .. })),
        "{change:?}"
    );
    let fp2 = recorded.fingerprint.unwrap();
    assert_eq!(
        store.retired_operator_key(&fp2).await.unwrap(),
        Some(k2.id.clone())
    );
}

/// Nodes that start at the same time converge: with the same new secret exactly one adopts it;
/// in a rolling deploy of a new secret, nodes still on the old one either start before the
/// change or refuse, and the old secret never comes back; without a secret, exactly one
/// withdraws it. One active key throughout.
pub async fn concurrent_starts_converge(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let starts = |secrets: Vec<Option<&'static str>>, seed: u64| {
        let store = backend.store.clone();
        let clock = clock.clone();
        async move {
            let mut tasks = Vec::new();
            for (i, secret) in secrets.into_iter().enumerate() {
                let (store, clock) = (store.clone(), clock.clone());
                tasks.push(tokio::spawn(async move {
                    let (_, change) = start(&store, &clock, secret, seed + i as u64).await;
                    (secret, change)
                }));
            }
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out
        }
    };
    let active_count = || {
        let store = backend.store.clone();
        async move {
            store
                .keys()
                .await
                .unwrap()
                .iter()
                .filter(|k| k.purpose == KeyPurpose::Access && k.retired_at.is_none())
                .count()
        }
    };

    let outcomes = starts(vec![Some(S1); 6], 10).await;
    let adopted = outcomes
        .iter()
        .filter(|(_, c)| matches!(c, Ok(OperatorKeyChange::Adopted { .. })))
        .count();
    assert_eq!(adopted, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|(_, c)| c.is_ok()), "{outcomes:?}");
    assert_eq!(active_count().await, 1);

    // Rolling deploy: three nodes with the new secret, three still with the old one.
    let mut mixed = vec![Some(S2); 3];
    mixed.extend([Some(S1); 3]);
    let outcomes = starts(mixed, 20).await;
    for (secret, change) in &outcomes {
        match (secret, change) {
            (Some(S2), Ok(OperatorKeyChange::Adopted { .. } | OperatorKeyChange::Unchanged))
            | (Some(S1), Ok(OperatorKeyChange::Unchanged))
            | (Some(S1), Err(KeyError::OperatorKeyRetired { .. })) => {}
            other => panic!("unexpected {other:?} in {outcomes:?}"),
        }
    }
    let adopted = outcomes
        .iter()
        .filter(|(_, c)| matches!(c, Ok(OperatorKeyChange::Adopted { .. })))
        .count();
    assert_eq!(adopted, 1, "{outcomes:?}");
    assert_eq!(active_count().await, 1);
    let (_, change) = start(&backend.store, &clock, Some(S2), 30).await;
    assert_eq!(
        change.unwrap(),
        OperatorKeyChange::Unchanged,
        "S2 is the active key"
    );
    let (_, change) = start(&backend.store, &clock, Some(S1), 31).await;
    assert!(matches!(change, Err(KeyError::OperatorKeyRetired { .. })));

    let outcomes = starts(vec![None; 4], 40).await;
    let withdrawn = outcomes
        .iter()
        .filter(|(_, c)| matches!(c, Ok(OperatorKeyChange::Withdrawn { .. })))
        .count();
    assert_eq!(withdrawn, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|(_, c)| c.is_ok()), "{outcomes:?}");
    assert_eq!(active_count().await, 1);
    let keys = backend.store.keys().await.unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.purpose == KeyPurpose::Access)
            .count(),
        4,
        "bootstrap, S1, S2, one generated: no node rotated after another"
    );
}

/// `retire` ends a key at once on the node that ran it (the active one is replaced in the same
/// step, audited), and on another node on the same database when its key snapshot is next
/// reloaded: within `cache_ttl` (30 s) of that node's clock, or at once when it meets a
/// credential signed by the replacement. A retained key is ended the same way; a second retire
/// changes nothing.
pub async fn retire_ends_a_key_here_at_once_and_elsewhere_within_the_snapshot_age(
    backend: TestBackend,
) {
    let clock = ManualClock::new(T0);
    let config = ServiceConfig::default;
    let here = node(&backend.store, &clock, config(), 1).await;
    let there = node(&backend.store, &clock, config(), 2).await;
    let third = node(&backend.store, &clock, config(), 3).await;
    let token = access_token(&here).await;
    let key = active_access(&here).await;
    validates(&there, &token).await.unwrap();
    validates(&third, &token).await.unwrap();

    clock.advance(secs(5));
    let done = here.retire_key(&key.id).await.unwrap();
    assert!(done.ended);
    assert_eq!(done.key.verify_until, Some(at(secs(5))));
    let replacement = done.replacement.clone().unwrap();
    assert_eq!(active_access(&here).await.id, replacement.id);
    assert_eq!(validates(&here, &token).await, Err("key_retired".into()));
    let fresh = access_token(&here).await;

    // A node that meets the replacement's key id reloads at once (at most once a second)...
    validates(&third, &fresh).await.unwrap();
    assert_eq!(validates(&third, &token).await, Err("key_retired".into()));
    // ...another serves from its snapshot (loaded at T0) until that is cache_ttl old...
    clock.set(at(secs(30)).saturating_sub(Duration::from_millis(1)));
    validates(&there, &token).await.unwrap();
    // ...and not a moment longer.
    clock.set(at(secs(30)));
    assert_eq!(validates(&there, &token).await, Err("key_retired".into()));
    validates(&there, &fresh).await.unwrap();

    let audit = here.audit_records(&AuditQuery::latest(10)).await.unwrap();
    assert!(audit.iter().any(|r| r.event == AuditEvent::KeyRetired
        && r.reason == "retired"
        && r.key_id.as_ref() == Some(&key.id)));
    assert!(audit
        .iter()
        .any(|r| r.event == AuditEvent::KeyRotated && r.key_id.as_ref() == Some(&replacement.id)));

    // A retained key (rotated out normally) is ended at once too, without a replacement.
    here.rotate_key(KeyPurpose::Access).await.unwrap();
    let now = clock.now();
    let done = here.retire_key(&replacement.id).await.unwrap();
    assert!(done.ended && done.replacement.is_none());
    assert_eq!(done.key.verify_until, Some(now));
    assert_eq!(validates(&here, &fresh).await, Err("key_retired".into()));
    let again = here.retire_key(&replacement.id).await.unwrap();
    assert!(!again.ended);
    assert!(matches!(
        here.retire_key(&sessiond::KeyId::generate(&sessiond::OsRandom))
            .await
            .unwrap_err(),
        KeyError::NoSuchKey(_)
    ));
}

/// The fingerprint column holds HMAC-SHA256 under a key derived from the master key: never the
/// secret, never its plain SHA-256 (or an HMAC keyed by the secret), and another master key
/// gives another fingerprint. The sealed material does not contain the secret either.
pub async fn the_fingerprint_is_keyed_never_the_secret_or_its_hash(backend: TestBackend) {
    let clock = ManualClock::new(T0);
    let (_, _) = start(&backend.store, &clock, Some(S1), 1).await;
    clock.advance(secs(1));
    let (_, _) = start(&backend.store, &clock, Some(S2), 2).await;
    let keys = backend.store.keys().await.unwrap(); // oldest first
    let operator: Vec<_> = keys
        .iter()
        .filter(|k| k.origin == KeyOrigin::Operator)
        .collect();
    assert_eq!(operator.len(), 2);
    for (record, secret) in operator.iter().zip([S1, S2]) {
        let fp = record.fingerprint.unwrap();
        let bytes = fp.as_bytes().as_slice();
        let plain = Sha256::digest(secret.as_bytes());
        let mut keyed_by_secret = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        keyed_by_secret.update(b"");
        for forbidden in [
            secret.as_bytes(),
            plain.as_slice(),
            keyed_by_secret.finalize().into_bytes().as_slice(),
        ] {
            assert!(
                !bytes
                    .windows(8)
                    .any(|w| forbidden.windows(8).any(|f| f == w)),
                "the fingerprint shares bytes with the secret or a plain hash of it"
            );
        }
        assert!(!record
            .sealed
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|f| f == w)));
        let master = MasterKey::from_bytes(MASTER);
        assert_eq!(
            fp,
            Fingerprint::of(
                &master,
                KeyPurpose::Access,
                KeyAlgorithm::Hs256,
                secret.as_bytes()
            )
        );
        let other = MasterKey::from_bytes([8u8; 32]);
        assert_ne!(
            fp,
            Fingerprint::of(
                &other,
                KeyPurpose::Access,
                KeyAlgorithm::Hs256,
                secret.as_bytes()
            )
        );
    }
    assert!(keys
        .iter()
        .filter(|k| k.origin == KeyOrigin::Generated)
        .all(|k| k.fingerprint.is_none()));
}
