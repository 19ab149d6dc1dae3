//! Refresh rotation rules (docs/DESIGN.md §3.3) on the manual clock: randomized
//! multi-tab schedules that must never revoke a session, the deterministic cases behind them,
//! theft in every interleaving of an owner and a thief, and refusals that change nothing.
//!
//! Every case is a generic function over a backend, instantiated for SQLite here and for
//! PostgreSQL in `postgres.rs` with [`rotation_suite!`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sessiond::audit::{AuditEvent, AuditQuery};
use sessiond::keys::KeyPurpose;
use sessiond::store::Backend;
use sessiond::{
    ManualClock, MasterKey, RequestContext, RevokeReason, SeededRandom, ServiceConfig, SessionKind,
    SessionService, TokenPair,
};

use crate::common::{secs, user, TestBackend, T0};

/// Instantiates every rotation case as a `#[tokio::test]` for the backend made by `$factory`.
#[macro_export]
macro_rules! rotation_suite {
    ($factory:path) => {
        $crate::rotation_suite!(@cases $factory;
            randomized_tab_schedules_never_revoke_a_session_a,
            randomized_tab_schedules_never_revoke_a_session_b,
            randomized_tab_schedules_never_revoke_a_session_c,
            randomized_tab_schedules_never_revoke_a_session_d,
            a_request_held_in_transit_while_two_tabs_rotate_converges,
            a_lost_response_is_reissued_after_the_grace_window,
            two_tabs_restoring_at_once_get_one_reissued_pair,
            theft_in_every_interleaving_ends_both_chains,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $factory().await;
                $crate::rotation::$case(backend).await;
            }
        )*
    };
}

const GRACE: Duration = Duration::from_secs(10);

/// A service on `backend` with its own manual clock (schedules run side by side on one store,
/// each on its own clock).
async fn service_on(
    store: Arc<dyn Backend>,
    config: ServiceConfig,
    seed: u64,
) -> (SessionService, ManualClock) {
    let clock = ManualClock::new(T0);
    let service = SessionService::builder(store, MasterKey::from_bytes([7u8; 32]))
        .clock(Arc::new(clock.clone()))
        .random(Arc::new(SeededRandom::new(seed)))
        .config(config)
        .start()
        .await
        .unwrap();
    (service, clock)
}

fn claims(token: &str) -> serde_json::Map<String, Value> {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn generation(token: &str) -> u64 {
    claims(token)["gen"].as_u64().unwrap()
}

fn secret(token: &str) -> String {
    claims(token)["jti"].as_str().unwrap().to_owned()
}

/// What a browser tab set (or a device) holds: the newest pair it received.
#[derive(Clone, Debug)]
struct Held {
    generation: u64,
    refresh: String,
    access: String,
}

impl Held {
    fn of(pair: &TokenPair) -> Held {
        Held {
            generation: generation(pair.refresh_token.expose()),
            refresh: pair.refresh_token.expose().clone(),
            access: pair.access_token.expose().clone(),
        }
    }
}

/// One cookie jar shared by tabs: every tab sends the newest token it holds, and it keeps the
/// newest it receives (by generation), whatever order answers arrive in.
#[derive(Debug)]
struct Jar(Mutex<Held>);

impl Jar {
    fn new(pair: &TokenPair) -> Jar {
        Jar(Mutex::new(Held::of(pair)))
    }

    fn newest(&self) -> Held {
        self.0.lock().unwrap().clone()
    }

    fn offer(&self, pair: &TokenPair) {
        let got = Held::of(pair);
        let mut held = self.0.lock().unwrap();
        if got.generation > held.generation {
            *held = got;
        }
    }
}

/// SplitMix64: a tiny deterministic generator for schedules (seeded per schedule, so a failure
/// names the seed that reproduces its choices; thread interleavings add the rest).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rotated: u64,
    converged: u64,
    reissued: u64,
    lost: u64,
    requests: u64,
}

/// One tab's request in a round: wait a random number of scheduler turns, maybe let the clock
/// drift (at most 800 ms per tab, so a round stays well inside the grace window, as requests
/// in flight do), take the jar's newest token, wait again (in transit), send it; the answer is
/// lost with some probability, else it goes into the jar.
async fn tab(
    service: SessionService,
    clock: ManualClock,
    jar: Arc<Jar>,
    mut dice: Dice,
    refresh: bool,
) -> Result<bool, String> {
    for _ in 0..dice.range(0, 4) {
        tokio::task::yield_now().await;
    }
    if dice.chance(50) {
        clock.advance(Duration::from_millis(dice.range(0, 800)));
    }
    let held = jar.newest();
    for _ in 0..dice.range(0, 4) {
        tokio::task::yield_now().await;
    }
    let ctx = RequestContext::default();
    if refresh {
        match service.refresh(&held.refresh, &ctx).await {
            Ok(pair) => {
                let lost = dice.chance(20);
                if !lost {
                    jar.offer(&pair.tokens);
                }
                Ok(lost)
            }
            Err(e) => Err(format!(
                "refresh of generation {} failed: {} ({})",
                held.generation,
                e.code(),
                e.reason()
            )),
        }
    } else {
        match service.validate_access_token(&held.access, &ctx).await {
            Ok(_) => Ok(false),
            // Access tokens live 10 minutes; the schedule moves the clock by hours.
            Err(e) if e.code() == "token_expired" => Ok(false),
            Err(e) => Err(format!(
                "validation of generation {} failed: {}",
                held.generation,
                e.code()
            )),
        }
    }
}

/// One randomized schedule: 2 to 6 tabs sharing a jar, 2 to 5 rounds of concurrent requests,
/// the clock moved between rounds by a little (inside grace), past the grace window, or by
/// hours, sometimes a key rotation. Any revocation is a false one.
async fn schedule(store: Arc<dyn Backend>, seed: u64) -> Result<Tally, String> {
    let mut dice = Dice(seed);
    // Schedules run side by side on one database, each on its own clock, hours apart after a
    // few rounds: as nodes, their clocks are skewed by hours, and the access-key bound must
    // allow for it (docs/DESIGN.md §4.2), or another schedule's rotation ends this one's key
    // early.
    let mut config = ServiceConfig::default();
    config.keys.clock_skew = secs(24 * 3600);
    let (service, clock) = service_on(store, config, seed).await;
    let kind = if dice.chance(50) {
        SessionKind::Browser
    } else {
        SessionKind::Tokens
    };
    let created = service
        .create_token_session(user(&format!("tabs{seed}")), kind)
        .await
        .map_err(|e| e.to_string())?;
    let jar = Arc::new(Jar::new(&created.tokens));
    let tabs = dice.range(2, 6);
    let mut tally = Tally::default();
    for _round in 0..dice.range(2, 5) {
        let mut tasks = Vec::new();
        for _ in 0..tabs {
            if dice.chance(25) {
                continue; // this tab is idle this round
            }
            let refresh = dice.chance(75);
            tasks.push(tokio::spawn(tab(
                service.clone(),
                clock.clone(),
                jar.clone(),
                Dice(dice.next()),
                refresh,
            )));
        }
        for task in tasks {
            let lost = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("seed {seed}: {e}"))?;
            tally.lost += u64::from(lost);
        }
        match dice.range(0, 9) {
            0..=4 => clock.advance(Duration::from_millis(dice.range(0, 3000))),
            5..=7 => clock.advance(secs(dice.range(11, 60))),
            _ => clock.advance(secs(dice.range(600, 7200))),
        }
        if dice.chance(10) {
            let purpose = if dice.chance(50) {
                KeyPurpose::Refresh
            } else {
                KeyPurpose::Access
            };
            service
                .rotate_key(purpose)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    // The person comes back: the newest token the jar holds still works.
    let last = jar.newest();
    service
        .refresh(&last.refresh, &RequestContext::default())
        .await
        .map_err(|e| format!("seed {seed}: final refresh failed: {}", e.code()))?;
    let session = service.session(&created.session.id).await.unwrap().unwrap();
    if let Some(reason) = session.revoke_reason {
        return Err(format!("seed {seed}: session revoked ({reason})"));
    }
    let m = service.metrics().snapshot();
    if m.refresh_reuse_detected != 0 {
        return Err(format!("seed {seed}: reuse detected"));
    }
    tally.rotated = m.refresh_rotated;
    tally.converged = m.refresh_converged;
    tally.reissued = m.refresh_reissued;
    tally.requests = m.refresh_rotated + m.refresh_converged + m.refresh_reissued;
    Ok(tally)
}

/// How many schedules run side by side on one store: a new one starts as soon as any one ends
/// (a fixed batch would wait for its longest schedule with the others idle).
const IN_FLIGHT: usize = 8;

/// Runs `count` schedules from `first_seed`, [`IN_FLIGHT`] at a time, and asserts that none
/// revoked anything and that the rules were all exercised.
async fn schedules(backend: TestBackend, first_seed: u64, count: u64) {
    let mut total = Tally::default();
    let mut failures = Vec::new();
    let mut seeds = first_seed..first_seed + count;
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < IN_FLIGHT {
            let Some(s) = seeds.next() else { break };
            running.spawn(schedule(backend.store.clone(), s));
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done.unwrap() {
            Ok(t) => {
                total.rotated += t.rotated;
                total.converged += t.converged;
                total.reissued += t.reissued;
                total.lost += t.lost;
                total.requests += t.requests;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} schedules revoked a session or failed: {failures:#?}",
        failures.len()
    );
    // Not vacuous: every rule ran, many times.
    eprintln!("{count} schedules: {total:?}");
    assert!(total.rotated > count, "{total:?}");
    assert!(total.converged > count / 4, "{total:?}");
    assert!(total.reissued > count / 20, "{total:?}");
}

// 4 × 256 = 1,024 schedules per backend, in four tests so each stays far inside the runner's
// per-test limit.
pub async fn randomized_tab_schedules_never_revoke_a_session_a(backend: TestBackend) {
    schedules(backend, 1, 256).await;
}
pub async fn randomized_tab_schedules_never_revoke_a_session_b(backend: TestBackend) {
    schedules(backend, 10_001, 256).await;
}
pub async fn randomized_tab_schedules_never_revoke_a_session_c(backend: TestBackend) {
    schedules(backend, 20_001, 256).await;
}
pub async fn randomized_tab_schedules_never_revoke_a_session_d(backend: TestBackend) {
    schedules(backend, 30_001, 256).await;
}

/// The timeline, deterministic: tab 1 sends token N and its request is held 1 s in
/// transit while tab 2 rotates N → N+1 and tab 3 rotates N+1 → N+2; tab 1's request then
/// arrives and gets the current pair (N+2), not a revocation.
pub async fn a_request_held_in_transit_while_two_tabs_rotate_converges(backend: TestBackend) {
    let (service, clock) = service_on(backend.store.clone(), ServiceConfig::default(), 1).await;
    let ctx = RequestContext::default();
    let created = service
        .create_token_session(user("chain"), SessionKind::Browser)
        .await
        .unwrap();
    let n = created.tokens.refresh_token.expose().clone();
    // Tab 1 sends N at t0 (in transit). Tab 2 sends N at t0 + 300 ms.
    clock.advance(Duration::from_millis(300));
    let tab2 = service.refresh(&n, &ctx).await.unwrap();
    // Tab 3 got N+1 from the jar and refreshes at t0 + 600 ms.
    clock.advance(Duration::from_millis(300));
    let tab3 = service
        .refresh(tab2.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    service
        .validate_access_token(tab3.tokens.access_token.expose(), &ctx)
        .await
        .unwrap();
    // Tab 1's request arrives at t0 + 1 s.
    clock.advance(Duration::from_millis(400));
    let tab1 = service.refresh(&n, &ctx).await.unwrap();
    assert_eq!(
        secret(tab1.tokens.refresh_token.expose()),
        secret(tab3.tokens.refresh_token.expose())
    );
    assert_eq!(generation(tab1.tokens.refresh_token.expose()), 2);
    // The converged pair is a working pair: its access token validates, its refresh rotates.
    service
        .validate_access_token(tab1.tokens.access_token.expose(), &ctx)
        .await
        .unwrap();
    clock.advance(secs(60));
    service
        .refresh(tab1.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    let m = service.metrics().snapshot();
    assert_eq!(
        (
            m.refresh_rotated,
            m.refresh_converged,
            m.refresh_reuse_detected
        ),
        (3, 1, 0)
    );
    let trail = service
        .audit_records(&AuditQuery::session(&created.session.id))
        .await
        .unwrap();
    assert_eq!(
        trail
            .iter()
            .filter(|r| r.event == AuditEvent::SessionRefreshed && r.reason == "converged")
            .count(),
        1
    );
}

/// A refresh whose answer never arrived: the client comes back with the old token, inside the
/// grace window (converges on the pair it missed) or after it (gets a fresh pair, the unused
/// one is abandoned and is reuse if it ever shows up).
pub async fn a_lost_response_is_reissued_after_the_grace_window(backend: TestBackend) {
    let (service, clock) = service_on(backend.store.clone(), ServiceConfig::default(), 2).await;
    let ctx = RequestContext::default();
    let created = service
        .create_token_session(user("lost"), SessionKind::Browser)
        .await
        .unwrap();
    let old = created.tokens.refresh_token.expose().clone();
    let lost = service.refresh(&old, &ctx).await.unwrap(); // the answer is lost
    clock.advance(secs(5));
    let inside = service.refresh(&old, &ctx).await.unwrap();
    assert_eq!(
        secret(inside.tokens.refresh_token.expose()),
        secret(lost.tokens.refresh_token.expose()),
        "inside grace: the pair that was missed"
    );
    // That answer is lost too; the person comes back tomorrow.
    clock.advance(secs(86_400));
    let back = service.refresh(&old, &ctx).await.unwrap();
    assert_ne!(
        secret(back.tokens.refresh_token.expose()),
        secret(lost.tokens.refresh_token.expose())
    );
    assert_eq!(generation(back.tokens.refresh_token.expose()), 2);
    // The re-issue counts as a rotation of the old token: a retry inside grace gets the same.
    clock.advance(secs(3));
    let retry = service.refresh(&old, &ctx).await.unwrap();
    assert_eq!(
        secret(retry.tokens.refresh_token.expose()),
        secret(back.tokens.refresh_token.expose())
    );
    // The re-issued pair works.
    service
        .validate_access_token(back.tokens.access_token.expose(), &ctx)
        .await
        .unwrap();
    // The abandoned pair's access token still validates until its own exp (a resource server
    // verifying offline could not tell it apart) and marks nothing as used.
    let abandoned_access = service
        .validate_access_token(lost.tokens.access_token.expose(), &ctx)
        .await;
    assert!(
        matches!(&abandoned_access, Err(e) if e.code() == "token_expired"),
        "a day later it has expired: {abandoned_access:?}"
    );
    let m = service.metrics().snapshot();
    assert_eq!(
        (
            m.refresh_rotated,
            m.refresh_converged,
            m.refresh_reissued,
            m.refresh_reuse_detected
        ),
        (1, 2, 1, 0)
    );
    // The abandoned refresh token means a second party holds the chain: reuse, at any time.
    clock.advance(secs(1));
    let err = service
        .refresh(lost.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
    let trail = service
        .audit_records(&AuditQuery::session(&created.session.id))
        .await
        .unwrap();
    let reasons: Vec<(&str, &str)> = trail
        .iter()
        .map(|r| (r.event.as_str(), r.reason.as_str()))
        .collect();
    for want in [
        ("session_refreshed", "rotated"),
        ("session_refreshed", "converged"),
        ("session_refreshed", "reissued"),
        ("refresh_reused", "not_on_chain"),
        ("session_revoked", "refresh_token_reused"),
    ] {
        assert!(reasons.contains(&want), "{want:?} not in {reasons:?}");
    }
    // Past the lost-response window, strict rules apply again.
    let (strict, strict_clock) =
        service_on(backend.store.clone(), ServiceConfig::default(), 3).await;
    let created = strict
        .create_token_session(user("late"), SessionKind::Tokens)
        .await
        .unwrap();
    strict
        .refresh(created.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    strict_clock.advance(strict.config().tokens.lost_response_window);
    let err = strict
        .refresh(created.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
}

/// Two restored tabs send the same old token 5 ms apart (and concurrently): one re-issue, the
/// same pair for both, no revocation.
pub async fn two_tabs_restoring_at_once_get_one_reissued_pair(backend: TestBackend) {
    let (service, clock) = service_on(backend.store.clone(), ServiceConfig::default(), 4).await;
    let ctx = RequestContext::default();
    let created = service
        .create_token_session(user("restore"), SessionKind::Browser)
        .await
        .unwrap();
    let old = created.tokens.refresh_token.expose().clone();
    service.refresh(&old, &ctx).await.unwrap(); // lost
    clock.advance(secs(3600));
    let a = service.refresh(&old, &ctx).await.unwrap();
    clock.advance(Duration::from_millis(5));
    let b = service.refresh(&old, &ctx).await.unwrap();
    assert_eq!(
        secret(a.tokens.refresh_token.expose()),
        secret(b.tokens.refresh_token.expose())
    );
    // And as a race: eight tabs restore at the same instant.
    service
        .refresh(a.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap(); // lost again
    clock.advance(secs(3600));
    let token = a.tokens.refresh_token.expose().clone();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (service, token, barrier) = (service.clone(), token.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                service.refresh(&token, &RequestContext::default()).await
            })
        })
        .collect();
    let mut secrets = std::collections::BTreeSet::new();
    for t in tasks {
        let pair = t.await.unwrap().expect("a restoring tab failed");
        secrets.insert(secret(pair.tokens.refresh_token.expose()));
    }
    assert_eq!(secrets.len(), 1, "the restoring tabs forked the session");
    let m = service.metrics().snapshot();
    assert_eq!((m.refresh_reissued, m.refresh_reuse_detected), (2, 0));
    assert!(service
        .session(&created.session.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    OwnerRefresh,
    ThiefRefresh,
    OwnerUse,
    ThiefUse,
    Wait,
}

/// An owner and a thief who copied the owner's refresh token at the start. Every interleaving
/// of three moves (refreshes, uses of the newest access token, waits past the grace window);
/// then both go on, each refreshing and using what they hold, a grace window apart. Whatever
/// the interleaving, the two never keep two working chains: within that continuation the
/// session is revoked for reuse, and from then on neither can refresh or validate anything.
pub async fn theft_in_every_interleaving_ends_both_chains(backend: TestBackend) {
    const MOVES: [Move; 5] = [
        Move::OwnerRefresh,
        Move::ThiefRefresh,
        Move::OwnerUse,
        Move::ThiefUse,
        Move::Wait,
    ];
    let (service, clock) = service_on(backend.store.clone(), ServiceConfig::default(), 5).await;
    let ctx = RequestContext::default();
    let mut cases = 0;
    for a in MOVES {
        for b in MOVES {
            for c in MOVES {
                let prefix = [a, b, c];
                let created = service
                    .create_token_session(user(&format!("victim{cases}")), SessionKind::Tokens)
                    .await
                    .unwrap();
                let mut owner = Held::of(&created.tokens);
                let mut thief = owner.clone();
                let mut revoked = false;
                let step = |holder: &Held, refresh: bool| {
                    let service = service.clone();
                    let held = holder.clone();
                    async move {
                        if refresh {
                            service
                                .refresh(&held.refresh, &ctx)
                                .await
                                .map(|p| Held::of(&p.tokens))
                        } else {
                            service
                                .validate_access_token(&held.access, &ctx)
                                .await
                                .map(|_| held)
                        }
                    }
                };
                for m in prefix {
                    let result = match m {
                        Move::Wait => {
                            clock.advance(GRACE + secs(1));
                            continue;
                        }
                        Move::OwnerRefresh | Move::OwnerUse => {
                            step(&owner, m == Move::OwnerRefresh)
                                .await
                                .map(|h| owner = h)
                        }
                        Move::ThiefRefresh | Move::ThiefUse => {
                            step(&thief, m == Move::ThiefRefresh)
                                .await
                                .map(|h| thief = h)
                        }
                    };
                    if let Err(e) = result {
                        assert!(
                            matches!(
                                e.code().as_str(),
                                "refresh_token_reused" | "session_revoked"
                            ),
                            "{prefix:?}: {m:?} failed with {}",
                            e.code()
                        );
                        revoked = true;
                        break;
                    }
                }
                // Both go on: owner, then thief, then owner, each a grace window apart.
                let mut turns = 0;
                while !revoked && turns < 4 {
                    clock.advance(GRACE + secs(1));
                    let holder = if turns % 2 == 0 {
                        &mut owner
                    } else {
                        &mut thief
                    };
                    match step(holder, true).await {
                        Ok(next) => {
                            *holder = next;
                            step(holder, false).await.unwrap();
                        }
                        Err(e) => {
                            assert_eq!(e.code(), "refresh_token_reused", "{prefix:?}");
                            revoked = true;
                        }
                    }
                    turns += 1;
                }
                assert!(revoked, "{prefix:?}: owner and thief both kept refreshing");
                assert!(turns <= 2, "{prefix:?}: detection took {turns} turns");
                for holder in [&owner, &thief] {
                    for refresh in [true, false] {
                        let e = step(holder, refresh).await.unwrap_err();
                        assert!(
                            matches!(e.code().as_str(), "session_revoked" | "token_expired"),
                            "{prefix:?}: {}",
                            e.code()
                        );
                    }
                }
                let session = service.session(&created.session.id).await.unwrap().unwrap();
                assert_eq!(
                    session.revoke_reason,
                    Some(RevokeReason::refresh_token_reused()),
                    "{prefix:?}"
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 125);
}

// ---- SQLite-only: refusals that change nothing, metrics ----

/// The row, the audit trail and the event stream after a refused request are as before it,
/// except for the one rate-bounded `validation_failed` record every refused credential leaves.
async fn assert_unchanged(
    service: &SessionService,
    backend: &TestBackend,
    id: &sessiond::SessionId,
    before: &sessiond::session::SessionRecord,
    audit_before: usize,
    events: &mut sessiond::events::Subscription,
    failure_reason: &str,
) {
    let after = backend.store.session(id).await.unwrap().unwrap();
    assert!(after == *before, "row changed: {before:?} -> {after:?}");
    let trail = service
        .audit_records(&AuditQuery::session(id))
        .await
        .unwrap();
    let new: Vec<(&str, &str)> = trail[..trail.len() - audit_before]
        .iter()
        .map(|r| (r.event.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(new, [("validation_failed", failure_reason)]);
    // Nothing was published: the next event is one made after the refusal.
    let marker = service.create_cookie_session(user("marker")).await.unwrap();
    service
        .revoke(&marker.session.id, &RevokeReason::logout())
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.session_id, marker.session.id);
}

#[tokio::test]
async fn refusals_by_kind_or_binding_change_nothing() {
    let backend = crate::common::sqlite_backend().await;
    let mut config = ServiceConfig::default();
    config.sessions.bind_ip = true;
    let (service, clock) = service_on(backend.store.clone(), config, 6).await;
    let mut events = service.events().subscribe();
    let ctx = RequestContext::default().ip("198.51.100.7");
    let tokens = service
        .create_token_session(user("native").ip("198.51.100.7"), SessionKind::Tokens)
        .await
        .unwrap();
    let id = &tokens.session.id;
    let refresh = tokens.tokens.refresh_token.expose();
    clock.advance(secs(60));

    let cases: [(&str, &str); 4] = [
        ("browser refresh of a tokens session", "wrong_kind"),
        ("browser logout of a tokens session", "wrong_kind"),
        ("refresh without the bound ip", "ip_mismatch"),
        ("refresh from another ip", "ip_mismatch"),
    ];
    for (case, reason) in cases {
        let before = backend.store.session(id).await.unwrap().unwrap();
        let audit_before = service
            .audit_records(&AuditQuery::session(id))
            .await
            .unwrap()
            .len();
        let err = match case {
            "browser refresh of a tokens session" => {
                service.refresh_browser(refresh, &ctx).await.unwrap_err()
            }
            "browser logout of a tokens session" => {
                service.logout_browser(refresh, &ctx).await.unwrap_err()
            }
            "refresh without the bound ip" => service
                .refresh(refresh, &RequestContext::default())
                .await
                .unwrap_err(),
            _ => service
                .refresh(refresh, &RequestContext::default().ip("203.0.113.9"))
                .await
                .unwrap_err(),
        };
        assert_eq!(err.reason(), reason, "{case}");
        assert_unchanged(
            &service,
            &backend,
            id,
            &before,
            audit_before,
            &mut events,
            reason,
        )
        .await;
    }
    // With the bound ip, the same token refreshes (nothing was rotated by the refusals).
    let next = service.refresh(refresh, &ctx).await.unwrap();
    assert_eq!(generation(next.tokens.refresh_token.expose()), 1);
}

/// Browser logout ends the session whatever the binding; the mismatch is audited.
#[tokio::test]
async fn browser_logout_from_a_new_network_ends_the_session() {
    let backend = crate::common::sqlite_backend().await;
    let mut config = ServiceConfig::default();
    config.sessions.bind_ip = true;
    config.sessions.bind_user_agent = true;
    let (service, _clock) = service_on(backend.store.clone(), config, 7).await;
    let created = service
        .create_token_session(
            user("roamer").ip("198.51.100.7").user_agent("UA/1"),
            SessionKind::Browser,
        )
        .await
        .unwrap();
    let elsewhere = RequestContext::default()
        .ip("203.0.113.9")
        .user_agent("UA/1");
    let ended = service
        .logout_browser(created.tokens.refresh_token.expose(), &elsewhere)
        .await
        .unwrap();
    assert_eq!(ended.id, created.session.id);
    let session = service.session(&created.session.id).await.unwrap().unwrap();
    assert_eq!(session.revoke_reason, Some(RevokeReason::logout()));
    let trail = service
        .audit_records(&AuditQuery::session(&created.session.id))
        .await
        .unwrap();
    assert!(trail.iter().any(|r| r.event == AuditEvent::ValidationFailed
        && r.reason == "ip_mismatch"
        && r.ip.as_deref() == Some("203.0.113.9")));
}

/// Oversize client facts on refresh are refused as input errors before anything is read.
#[tokio::test]
async fn refresh_refuses_oversize_client_facts() {
    let backend = crate::common::sqlite_backend().await;
    let (service, _clock) = service_on(backend.store.clone(), ServiceConfig::default(), 8).await;
    let created = service
        .create_token_session(user("big"), SessionKind::Tokens)
        .await
        .unwrap();
    let long_ip = "1".repeat(65);
    for ctx in [
        RequestContext::default().ip(&long_ip),
        RequestContext::default().user_agent("line\nbreak"),
    ] {
        let err = service
            .refresh(created.tokens.refresh_token.expose(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }
    assert_eq!(service.metrics().snapshot().refresh_rotated, 0);
}

/// Strict mode (`lost_response_window = 0`): the unused pair's predecessor outside the grace
/// window is reuse, as before these rules; chains inside grace still converge.
#[tokio::test]
async fn strict_mode_revokes_a_lost_response() {
    let backend = crate::common::sqlite_backend().await;
    let mut config = ServiceConfig::default();
    config.tokens.lost_response_window = Duration::ZERO;
    let (service, clock) = service_on(backend.store.clone(), config, 9).await;
    let ctx = RequestContext::default();
    let created = service
        .create_token_session(user("strict"), SessionKind::Tokens)
        .await
        .unwrap();
    let old = created.tokens.refresh_token.expose().clone();
    let next = service.refresh(&old, &ctx).await.unwrap();
    service
        .refresh(next.tokens.refresh_token.expose(), &ctx)
        .await
        .unwrap();
    clock.advance(secs(1));
    service.refresh(&old, &ctx).await.unwrap(); // a chain inside grace converges
    clock.advance(GRACE);
    let err = service.refresh(&old, &ctx).await.unwrap_err();
    assert_eq!(err.code(), "refresh_token_reused");
    let trail = service
        .audit_records(&AuditQuery::session(&created.session.id))
        .await
        .unwrap();
    assert!(trail
        .iter()
        .any(|r| r.event == AuditEvent::RefreshReused && r.reason == "successor_used"));
}
