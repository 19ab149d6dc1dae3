import { test } from "node:test";
import assert from "node:assert/strict";
import { world, settle } from "./_world.mjs";

test("5 tabs sharing one channel + lock → 1 refresh per expiry", async (t) => {
  const w = world();
  t.after(w.close);
  const tabs = [w.tab(), w.tab(), w.tab(), w.tab(), w.tab()];
  await w.login(tabs[0]);
  w.server.latency = 2_000; // slow answers: peers' timers fire while a refresh is under way
  for (const x of tabs.slice(1)) assert.equal(await w.during(x.sd.getAccessToken(), 200), "at-1");
  assert.equal(w.server.calls.refresh, 0);
  await w.clock.run(600_000);
  const times = w.server.refreshTimes;
  // ttl 60 s, margin 30 s (half the life) minus up to 15 s jitter: each token is refreshed
  // once, 15–30 s after it was issued, by one tab; never twice
  assert.ok(times.length >= 20 && times.length <= 40, `${times.length} refreshes in 10 min`);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 15_000, `refreshes ${i - 1},${i} too close`);
  const last = "at-" + w.server.gen;
  for (const x of tabs) assert.equal(await x.sd.getAccessToken(), last);
  assert.equal(w.server.calls.refresh, times.length);
});

test("5 fresh tabs asking at once (no token anywhere) → 1 refresh", async (t) => {
  const w = world();
  t.after(w.close);
  w.server.latency = 300; // they all queue on the refresh lock while the first refreshes
  const tabs = [w.tab(), w.tab(), w.tab(), w.tab(), w.tab()];
  const toks = await w.during(Promise.all(tabs.map((x) => x.sd.getAccessToken())), 1_000);
  assert.deepEqual(toks, ["at-1", "at-1", "at-1", "at-1", "at-1"]);
  assert.equal(w.server.calls.refresh, 1);
});

test("a new tab asks its peers and gets their token without refreshing", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  a.setVisible(false); // no proactive refreshes in this test
  await w.login(a);
  await w.clock.run(10_000);
  const b = w.tab();
  b.setVisible(false);
  assert.equal(await w.during(b.sd.getAccessToken(), 200), "at-1");
  assert.equal(w.server.calls.refresh, 0);
  assert.equal(b.sd.loggedIn, true);
  // b's deadline is its own, from receipt: the ~50 s the token had left (not 60)
  await w.clock.run(47_000);
  assert.equal(await b.sd.getAccessToken(), "at-1");
  await w.clock.run(2_000);
  assert.equal(await w.during(b.sd.getAccessToken()), "at-2");
  assert.equal(w.server.calls.refresh, 1);
});

test("login in one tab reaches the others (also a tab that found no session)", async (t) => {
  const w = world();
  t.after(w.close);
  w.server.alive = false;
  const a = w.tab();
  const b = w.tab();
  assert.equal(await w.during(b.sd.getAccessToken(), 500), null);
  assert.deepEqual(b.ends, []); // it never had a session: nothing ended
  await w.login(a);
  await settle();
  assert.equal(b.sd.loggedIn, true);
  assert.equal(await b.sd.getAccessToken(), "at-1");
});

test("logout broadcasts the end to every tab; each fires onSessionEnd once", async (t) => {
  const w = world();
  t.after(w.close);
  const tabs = [w.tab(), w.tab(), w.tab()];
  await w.login(tabs[0]);
  await settle();
  for (const x of tabs) assert.equal(x.sd.loggedIn, true);
  const extra = [];
  const off = tabs[1].sd.onSessionEnd((r) => extra.push(r));
  const off2 = tabs[2].sd.onSessionEnd((r) => extra.push("removed:" + r));
  off2();
  await tabs[0].sd.logout();
  await settle();
  assert.equal(w.server.calls.logout, 1);
  for (const x of tabs) {
    assert.deepEqual(x.ends, ["logout"]);
    assert.equal(x.sd.loggedIn, false);
    assert.equal(await x.sd.getAccessToken(), null);
  }
  assert.deepEqual(extra, ["logout"]);
  off();
  await w.clock.run(600_000);
  assert.equal(w.server.calls.refresh, 0);
  for (const x of tabs) assert.deepEqual(x.ends, ["logout"]);
});

test("the leader's events stream: `ended` ends every tab's session", async (t) => {
  const w = world();
  t.after(w.close);
  const tabs = [w.tab({ liveEnd: true }), w.tab({ liveEnd: true }), w.tab({ liveEnd: true })];
  await w.clock.run(1_000);
  assert.equal(w.server.calls.events, 0, "no stream before login");
  await w.login(tabs[1]);
  await w.clock.run(1_000);
  assert.equal(w.server.calls.events, 1, "one stream, from the leader only");
  assert.equal(w.server.streams.size, 1);
  w.server.endSession("reuse_detected");
  await w.clock.run(1_000);
  for (const x of tabs) {
    assert.deepEqual(x.ends, ["reuse_detected"]);
    assert.equal(await x.sd.getAccessToken(), null);
  }
  await w.clock.run(300_000);
  assert.equal(w.server.calls.events, 1, "logged out: the leader stops");
  assert.equal(w.server.calls.refresh, 0);
});

test("the leader reopens a dropped stream with backoff; another tab leads when it closes", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab({ liveEnd: true });
  const b = w.tab({ liveEnd: true });
  await w.login(a);
  await w.clock.run(1_000);
  assert.equal(w.server.calls.events, 1);
  w.server.dropStreams();
  await w.clock.run(200);
  assert.equal(w.server.calls.events, 1, "not at once");
  await w.clock.run(5_000);
  assert.equal(w.server.calls.events, 2, "reopened after a backoff");
  a.sd.close();
  await w.clock.run(5_000);
  assert.equal(w.server.calls.events, 3, "b took over");
  assert.equal(w.server.streams.size, 1);
  w.server.endSession("expired", "idle_expired");
  await w.clock.run(1_000);
  assert.deepEqual(b.ends, ["expired"]);
  assert.deepEqual(a.ends, [], "a closed tab hears nothing");
});

test("SSE parsing: chunks split anywhere, CRLF, comments, other events, multi-line data", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab({ liveEnd: true });
  const b = w.tab({ liveEnd: true });
  await w.login(a);
  await w.clock.run(1_000);
  assert.equal(w.server.streams.size, 1);
  const [c] = w.server.streams;
  const text =
    ': keep-alive\r\n\r\nevent: refreshed\r\ndata: {"reason":"logout"}\r\n\r\n' +
    'id: 1-2\nevent:ended\ndata: {"session_id":"s1",\ndata: "reason":"revoked","detail":"admin"}\n\n';
  for (let i = 0; i < text.length; i += 7) {
    c.enqueue(new TextEncoder().encode(text.slice(i, i + 7)));
    await settle(1);
  }
  await w.clock.run(1_000);
  assert.deepEqual(a.ends, ["revoked"]);
  assert.deepEqual(b.ends, ["revoked"]);
});

test("events 401 (token no longer validates) → refresh → 401 unauthorized ends the session", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab({ liveEnd: true });
  await w.login(a);
  w.server.alive = false; // revoked while no stream was open
  w.server.dropStreams();
  await w.clock.run(10_000);
  assert.deepEqual(a.ends, ["unauthorized"]);
  assert.equal(a.sd.loggedIn, false);
});

test("without Web Locks and BroadcastChannel: single-tab behaviour", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab({ liveEnd: true }, { BroadcastChannel: undefined, navigator: { onLine: true } });
  const toks = await w.during(Promise.all([a.sd.getAccessToken(), a.sd.getAccessToken()]), 10);
  assert.deepEqual(toks, ["at-1", "at-1"]);
  assert.equal(w.server.calls.refresh, 1);
  await w.clock.run(60_000);
  assert.ok(w.server.calls.refresh >= 3, "proactive refreshes go on");
  assert.equal(w.server.calls.events, 0, "no leader election without Web Locks");
  await a.sd.logout();
  assert.deepEqual(a.ends, ["logout"]);
});
