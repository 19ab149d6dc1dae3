//! Refresh rotation over HTTP (docs/DESIGN.md §3.3): randomized multi-tab
//! schedules across three nodes that must never revoke a session. (The refusals of the refresh
//! routes that must change nothing run in process: `inproc::rotation`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::harness::{jwt_part, postgres_url, redis_url, Cluster, Handle};

const ORIGIN: &str = "https://app.example";
/// A short grace window, so schedules can step past it in real time.
const GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Held {
    generation: u64,
    refresh: String,
    access: String,
}

impl Held {
    fn new(refresh: &str, access: &str) -> Held {
        Held {
            generation: jwt_part(refresh, 1)["gen"].as_u64().unwrap(),
            refresh: refresh.to_owned(),
            access: access.to_owned(),
        }
    }
}

/// The cookie jar the tabs of one schedule share: newest token out, newest token in.
struct Jar(Mutex<Held>);

impl Jar {
    fn newest(&self) -> Held {
        self.0.lock().unwrap().clone()
    }

    fn offer(&self, got: Held) {
        let mut held = self.0.lock().unwrap();
        if got.generation > held.generation {
            *held = got;
        }
    }
}

struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

pub(crate) fn refresh_cookie_value(set_cookie: &str) -> Option<String> {
    let pair = set_cookie.split(';').next()?;
    let (name, value) = pair.split_once('=')?;
    (name.trim() == "__Host-sessiond-refresh").then(|| value.to_owned())
}

/// Refreshes `held` on `node` the way its kind does: server to server, or as the browser with
/// the refresh cookie and an allowed Origin.
async fn refresh(node: &Handle, browser: bool, held: &Held) -> Result<Held, String> {
    if browser {
        let cookie = format!("__Host-sessiond-refresh={}", held.refresh);
        let r = node
            .send_with(
                Method::POST,
                "/auth/browser/refresh",
                None,
                &[("cookie", &cookie), ("origin", ORIGIN)],
                false,
            )
            .await;
        if r.status != 200 {
            return Err(format!("browser refresh: {} {}", r.status, r.text));
        }
        let rotated = r
            .set_cookies()
            .iter()
            .find_map(|c| refresh_cookie_value(c))
            .ok_or("no refresh cookie")?;
        Ok(Held::new(
            &rotated,
            r.body["access_token"].as_str().unwrap(),
        ))
    } else {
        let r = node
            .post("/v1/tokens/refresh", json!({"refresh_token": held.refresh}))
            .await;
        if r.status != 200 {
            return Err(format!("refresh: {} {}", r.status, r.text));
        }
        let t = &r.body["tokens"];
        Ok(Held::new(
            t["refresh_token"].as_str().unwrap(),
            t["access_token"].as_str().unwrap(),
        ))
    }
}

async fn schedule(nodes: Arc<Vec<Handle>>, seed: u64) -> Result<(), String> {
    let mut dice = Dice(seed);
    let pick = |dice: &mut Dice| nodes[dice.range(0, 2) as usize].clone();
    let browser = dice.chance(50);
    let kind = if browser { "browser" } else { "tokens" };
    let created = pick(&mut dice)
        .post(
            "/v1/sessions",
            json!({"user_id": format!("tab-{seed}"), "kind": kind}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["session"]["id"].as_str().unwrap().to_owned();
    let t = &created.body["tokens"];
    let refresh_token = match t["refresh_token"].as_str() {
        Some(r) => r.to_owned(),
        None => created.body["set_cookie"][0]
            .as_str()
            .and_then(refresh_cookie_value)
            .unwrap(),
    };
    let jar = Arc::new(Jar(Mutex::new(Held::new(
        &refresh_token,
        t["access_token"].as_str().unwrap(),
    ))));
    let tabs = dice.range(2, 6);
    for _round in 0..dice.range(2, 5) {
        let mut round = JoinSet::new();
        for _ in 0..tabs {
            if dice.chance(25) {
                continue;
            }
            let (node, jar, mut tab_dice) = (pick(&mut dice), jar.clone(), Dice(dice.next()));
            round.spawn(async move {
                tokio::time::sleep(Duration::from_millis(tab_dice.range(0, 30))).await;
                let held = jar.newest();
                tokio::time::sleep(Duration::from_millis(tab_dice.range(0, 30))).await;
                if tab_dice.chance(75) {
                    let got = refresh(&node, browser, &held)
                        .await
                        .map_err(|e| format!("gen {}: {e}", held.generation))?;
                    if !tab_dice.chance(20) {
                        jar.offer(got); // else the answer is lost
                    }
                } else {
                    let v = node
                        .post(
                            "/v1/sessions/validate",
                            json!({"access_token": held.access}),
                        )
                        .await;
                    if v.status != 200 {
                        return Err(format!("validate gen {}: {}", held.generation, v.text));
                    }
                }
                Ok::<(), String>(())
            });
        }
        while let Some(done) = round.join_next().await {
            done.unwrap().map_err(|e| format!("seed {seed}: {e}"))?;
        }
        if dice.chance(50) {
            tokio::time::sleep(GRACE + Duration::from_millis(300)).await;
        }
    }
    refresh(&pick(&mut dice), browser, &jar.newest())
        .await
        .map_err(|e| format!("seed {seed}: final refresh: {e}"))?;
    let got = nodes[0].get(&format!("/v1/sessions/{id}")).await;
    if !got.body["session"]["revoked_at"].is_null() {
        return Err(format!("seed {seed}: session revoked: {}", got.text));
    }
    Ok(())
}

/// 100 randomized schedules of 2–6 tabs sharing a jar, over three nodes on PostgreSQL + Redis,
/// with a 2 s grace window, all at once (their pauses past the grace window overlap): zero
/// revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_tab_schedules_on_three_nodes_never_revoke_a_session() {
    let cluster = Cluster::start_with(
        3,
        &postgres_url(),
        Some(&redis_url()),
        &format!(
            "[token_sessions]\nrefresh_grace = \"{}ms\"\n[cookies]\nallowed_origins = [\"{ORIGIN}\"]\n",
            GRACE.as_millis()
        ),
    )
    .await;
    let nodes = Arc::new(cluster.nodes.iter().map(|n| n.handle()).collect::<Vec<_>>());
    let gate = Arc::new(Semaphore::new(100));
    let mut all = JoinSet::new();
    for seed in 1..=100u64 {
        let (nodes, gate) = (nodes.clone(), gate.clone());
        all.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            schedule(nodes, seed).await
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = all.join_next().await {
        if let Err(e) = done.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Every rule ran: count the outcomes over the three nodes.
    let mut outcomes = std::collections::BTreeMap::new();
    for node in nodes.iter() {
        let text = node.get("/metrics").await.text;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("sessiond_refreshes_total{outcome=\"") {
                let (outcome, value) = rest.split_once("\"} ").unwrap();
                *outcomes.entry(outcome.to_owned()).or_insert(0u64) +=
                    value.parse::<u64>().unwrap();
            }
        }
    }
    eprintln!("refresh outcomes over 100 schedules: {outcomes:?}");
    assert_eq!(outcomes.get("reused"), Some(&0));
    for rule in ["rotated", "converged", "reissued"] {
        assert!(outcomes.get(rule).is_some_and(|n| *n > 0), "{outcomes:?}");
    }
}

pub(crate) fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().unwrap())
}
