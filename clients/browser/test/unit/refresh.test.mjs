import { test } from "node:test";
import assert from "node:assert/strict";
import { world, settle } from "./_world.mjs";

test("10 concurrent getAccessToken/fetch → 1 refresh", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  const ps = [];
  for (let i = 0; i < 5; i++) ps.push(a.sd.getAccessToken());
  for (let i = 0; i < 5; i++) ps.push(a.sd.fetch("https://api.example.com/api/data"));
  const out = await w.during(Promise.all(ps), 500);
  assert.equal(w.server.calls.refresh, 1);
  for (const tok of out.slice(0, 5)) assert.equal(tok, "at-1");
  for (const r of out.slice(5)) assert.deepEqual(await r.json(), { ok: true, token: "at-1" });
  assert.equal(a.sd.loggedIn, true);
  assert.deepEqual(w.server.violations, []);
});

test("a held token is reused without a request; proactive refresh before expiry", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab({ refreshMargin: 10 });
  await w.login(a);
  assert.equal(await a.sd.getAccessToken(), "at-1");
  assert.equal(w.server.calls.refresh, 0);
  const t0 = w.clock.t;
  await w.clock.run(60_000);
  assert.equal(w.server.calls.refresh, 1);
  // margin 10 s with jitter up to half of it: between 45 and 50 s after receipt
  const at = w.server.refreshTimes[0] - t0;
  assert.ok(at >= 45_000 && at <= 50_000, `refreshed at ${at} ms`);
  assert.equal(await a.sd.getAccessToken(), "at-2");
});

test("refreshMargin is capped at half the lifetime", async (t) => {
  const w = world();
  t.after(w.close);
  w.server.ttl = 20;
  const a = w.tab({ refreshMargin: 300 });
  await w.login(a);
  const t0 = w.clock.t;
  await w.clock.run(11_000);
  assert.equal(w.server.calls.refresh, 1);
  const at = w.server.refreshTimes[0] - t0;
  assert.ok(at >= 5_000 && at <= 10_000, `refreshed at ${at} ms`);
});

test("401 token_expired → one refresh and one retry", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  w.server.expired.add("at-1"); // the server thinks it expired (clock skew)
  const r = await w.during(a.sd.fetch("https://api.example.com/api/data"));
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { ok: true, token: "at-2" });
  assert.equal(w.server.calls.refresh, 1);
  assert.equal(w.server.calls.api, 2);
});

test("a second 401 token_expired is returned, not looped", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  w.server.apiAlwaysExpired = true;
  const r = await w.during(a.sd.fetch(new Request("https://api.example.com/api/data", { method: "POST", body: "x" })));
  assert.equal(r.status, 401);
  assert.equal((await r.json()).code, "token_expired");
  assert.equal(w.server.calls.refresh, 1);
  assert.equal(w.server.calls.api, 2);
});

test("other responses pass through untouched (401 unauthorized is not retried)", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  w.server.valid.delete("at-1");
  const r = await w.during(a.sd.fetch("https://api.example.com/api/data", { headers: { "x-a": "1" } }));
  assert.equal(r.status, 401);
  assert.equal(w.server.calls.refresh, 0);
  assert.equal(w.server.calls.api, 1);
});

test("401 unauthorized on refresh → onSessionEnd('unauthorized') once, then null without requests", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  w.server.alive = false;
  w.server.expired.add("at-1");
  const r = await w.during(a.sd.fetch("https://api.example.com/api/data"));
  assert.equal(r.status, 401);
  assert.deepEqual(a.ends, ["unauthorized"]);
  assert.equal(a.sd.loggedIn, false);
  assert.equal(await a.sd.getAccessToken(), null);
  assert.equal(await a.sd.getAccessToken(), null);
  await w.clock.run(600_000);
  assert.deepEqual(a.ends, ["unauthorized"]);
  assert.equal(w.server.calls.refresh, 1);
});

test("503 → exponential backoff, no request storm", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  w.server.mode = 503;
  // proactive refresh fails from ~30 s on; then backoff 1, 2, 4, ... capped at 60 s (with jitter)
  await w.clock.run(600_000);
  const n = w.server.calls.refresh;
  assert.ok(n >= 5 && n <= 20, `${n} refresh calls in 10 min`);
  const times = w.server.refreshTimes;
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 500, "never a tight loop");
  assert.equal(a.sd.loggedIn, true, "an outage does not log out");
  assert.deepEqual(a.ends, []);

  // an application hammering getAccessToken (token now expired) is held to the backoff too
  const before = w.server.calls.refresh;
  let rejected = 0;
  for (let i = 0; i < 50; i++) {
    a.sd.getAccessToken().catch(() => rejected++);
    await w.clock.run(100);
  }
  await w.clock.run(70_000); // the callers wait for the next allowed attempt, then get its error
  assert.ok(w.server.calls.refresh - before <= 3, `${w.server.calls.refresh - before} calls for 50 asks`);
  assert.equal(rejected, 50);

  w.server.mode = "ok";
  const tok = await w.during(a.sd.getAccessToken(), 120_000);
  assert.match(tok, /^at-/);
});

test("offline → no refresh attempts until online", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  a.setOnline(false);
  await w.clock.run(300_000); // token long expired
  assert.equal(w.server.calls.refresh, 0);
  const p = a.sd.getAccessToken();
  await w.clock.run(10_000);
  assert.equal(w.server.calls.refresh, 0);
  a.setOnline(true);
  assert.equal(await w.during(p), "at-2");
  assert.equal(w.server.calls.refresh, 1);
});

test("navigator.onLine === false alone also holds refreshes back", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  a.env.navigator.onLine = false;
  await w.clock.run(120_000);
  assert.equal(w.server.calls.refresh, 0);
  a.setOnline(true);
  await w.clock.run(1_000);
  assert.equal(w.server.calls.refresh, 1);
});

test("hidden → no proactive refresh; on demand or when visible again", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  a.setVisible(false);
  await w.clock.run(300_000);
  assert.equal(w.server.calls.refresh, 0);
  assert.equal(await w.during(a.sd.getAccessToken()), "at-2");
  assert.equal(w.server.calls.refresh, 1);
  await w.clock.run(300_000);
  assert.equal(w.server.calls.refresh, 1);
  a.setVisible(true);
  await w.clock.run(1_000);
  assert.equal(w.server.calls.refresh, 2);
});

test("close() stops timers", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  await w.login(a);
  a.sd.close();
  await w.clock.run(600_000);
  assert.equal(w.server.calls.refresh, 0);
  assert.equal(await a.sd.getAccessToken(), null);
  await settle();
});

test("logout while a refresh is in flight: the late answer is dropped", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  const b = w.tab();
  a.setVisible(false);
  b.setVisible(false);
  await w.login(a);
  await w.clock.run(61_000); // expired; hidden tabs did not refresh
  w.server.refreshLatency = 2_000; // rotated server-side, answer slow to arrive
  const p = a.sd.getAccessToken();
  await w.clock.run(500);
  assert.equal(w.server.calls.refresh, 1);
  await a.sd.logout();
  await w.clock.run(5_000);
  assert.equal(await p, null);
  assert.deepEqual(a.ends, ["logout"]);
  assert.deepEqual(b.ends, ["logout"]);
  for (const x of [a, b]) {
    assert.equal(x.sd.loggedIn, false);
    assert.equal(await x.sd.getAccessToken(), null);
  }
});

test("a zero or missing lifetime does not become a refresh loop", async (t) => {
  const w = world();
  t.after(w.close);
  w.server.ttl = 0;
  const a = w.tab();
  await w.login(a);
  await w.clock.run(60_000);
  assert.ok(w.server.calls.refresh <= 13, `${w.server.calls.refresh} refreshes in a minute`);
  w.server.ttl = undefined; // an older server: expires_at only
  await w.clock.run(60_000);
  assert.ok(w.server.calls.refresh <= 26, `${w.server.calls.refresh} refreshes in two minutes`);
});

test("a page opened without a session: null, no onSessionEnd, no end told to other tabs", async (t) => {
  const w = world();
  t.after(w.close);
  w.server.alive = false; // no refresh cookie, or a dead one
  const heard = [];
  const ear = new BroadcastChannel("sessiond:" + w.name);
  ear.onmessage = (e) => heard.push(e.data.t);
  t.after(() => ear.close());
  const a = w.tab();
  assert.equal(await w.during(a.sd.getAccessToken()), null);
  assert.equal(await a.sd.getAccessToken(), null);
  await w.clock.run(1000);
  assert.deepEqual(a.ends, []);
  assert.ok(!heard.includes("end"), `heard ${heard}`);
  assert.equal(w.server.calls.refresh, 1);
  assert.equal(a.sd.loggedIn, false);
});
