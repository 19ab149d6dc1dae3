// The SPA example and the browser SDK in a real headless Chromium against the real sessiond
// binary: both deployments, storage, single-flight and cross-tab refresh, live end, CORS, the
// account page. Run by `npm test` here and by the repository's `scripts/test`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startStack, launchBrowser, loginThroughForm, saveArtifact, waitFor } from "./harness.mjs";

// Short lifetimes so that expiry periods pass within a test: a 4 s access token that the SDK
// refreshes 1 s ahead of expiry (less up to half a second of jitter), a 1 s grace window.
const TOML = `
[token_sessions]
access_ttl = "4s"
refresh_grace = "1s"

[events]
keep_alive = "1s"
`;
const ACCESS_TTL_MS = 4000;
const REFRESH_MARGIN_S = 1;
// The shortest time between two proactive refreshes of one token's successors.
const MIN_REFRESH_INTERVAL_MS = ACCESS_TTL_MS - 1500 * REFRESH_MARGIN_S;

let browser;
const stacks = {};

before(async () => {
  browser = await launchBrowser();
  stacks.cross = await startStack({ mode: "cross-origin", toml: TOML, refreshMargin: REFRESH_MARGIN_S });
  stacks.same = await startStack({ mode: "same-origin", toml: TOML, refreshMargin: REFRESH_MARGIN_S });
});

after(async () => {
  await browser?.close();
  for (const stack of Object.values(stacks)) await stack.stop();
});

async function openApp(context, stack) {
  const page = await context.newPage();
  await page.goto(stack.appOrigin);
  await page.waitForFunction(() => window.spa?.ready);
  await page.evaluate(() => window.spa.ready);
  return page;
}

/**
 * A page of the application's origin with only the SDK loaded (no app code). A document served
 * by the real backend: Chromium lets pages on loopback call other loopback origins, and a page
 * the test runner made up would count as a public one (Local Network Access).
 */
async function openBare(context, stack) {
  const page = await context.newPage();
  await page.goto(`${stack.appOrigin}/config.json`);
  await page.addScriptTag({ url: "/sessiond.js" });
  return page;
}

async function refreshes(stack) {
  return stack.metric("sessiond_refreshes_total");
}

for (const mode of ["same", "cross"]) {
  test(`login through the handoff, ${mode}-origin deployment; nothing readable by scripts`, async () => {
    const stack = stacks[mode];
    const context = await browser.newContext();
    const page = await openApp(context, stack);
    assert.equal(await page.isVisible("#login-view"), true);
    await loginThroughForm(page);
    assert.match(await page.textContent("#who"), /Signed in as Alice/);
    await page.click("#call-api");
    await page.waitForFunction(() => document.querySelector("#api-result").textContent !== "");
    assert.equal(await page.textContent("#api-result"), "Hello Alice");

    // The refresh cookie: HttpOnly, SameSite=Strict, on sessiond's host (the application's
    // in the same-origin deployment), never visible to the page's scripts.
    const cookies = await context.cookies();
    const refresh = cookies.find((c) => c.name === "__Host-sessiond-refresh");
    assert.ok(refresh, `no refresh cookie among ${cookies.map((c) => c.name)}`);
    assert.equal(refresh.httpOnly, true);
    assert.equal(refresh.sameSite, "Strict");
    assert.equal(refresh.secure, true);
    const token = await page.evaluate(() => window.spa.sessiond.getAccessToken());
    assert.ok(token && token.split(".").length === 3);
    const visible = await page.evaluate(async () => ({
      cookie: document.cookie,
      local: JSON.stringify({ ...localStorage }),
      session: JSON.stringify({ ...sessionStorage }),
      databases: JSON.stringify(await indexedDB.databases()),
      caches: JSON.stringify(await caches.keys()),
    }));
    assert.doesNotMatch(visible.cookie, /refresh/);
    assert.equal(visible.local, "{}");
    assert.equal(visible.session, "{}");
    assert.equal(visible.databases, "[]");
    assert.equal(visible.caches, "[]");
    for (const place of Object.values(visible)) {
      assert.ok(!place.includes(token.slice(-20)), "the access token is stored somewhere");
    }

    // The account list and the live-end stream work in this deployment too (through the
    // proxy, same-origin GETs carry no Origin header).
    const sessionId = await page.getAttribute("#devices tr.current", "data-session-id");
    await waitFor(async () => (await stack.metric("sessiond_event_streams_open")) >= 1, 5000);
    await stack.api("POST", `/v1/sessions/${sessionId}/revoke`, { reason: "admin_revoked" });
    await page.waitForFunction(() => window.spa.seen.ends.length > 0, null, { timeout: 5000 });
    assert.deepEqual(await page.evaluate(() => window.spa.seen.ends.map((e) => e.reason)), ["revoked"]);
    await context.close();
  });
}

test("ten concurrent SDK fetches in a fresh tab refresh once", async () => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  const app = await openApp(context, stack);
  await loginThroughForm(app);
  await app.close(); // the token lived only in that tab's memory
  const page = await openBare(context, stack);
  const before = await refreshes(stack);
  const statuses = await page.evaluate(async (baseUrl) => {
    const s = Sessiond.createSessiond({ baseUrl, liveEnd: false });
    const answers = await Promise.all(Array.from({ length: 10 }, () => s.fetch("/api/me")));
    s.close();
    return answers.map((a) => a.status);
  }, stack.sessiondOrigin);
  assert.deepEqual(statuses, Array(10).fill(200));
  assert.equal((await refreshes(stack)) - before, 1);
  await context.close();
});

test("five tabs over 50 randomized rounds: one refresh per token, no false revocation", async (t) => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  const tabs = [await openApp(context, stack)];
  await loginThroughForm(tabs[0]);
  for (let i = 1; i < 5; i++) tabs.push(await openApp(context, stack));
  const outcomes = async () => ({
    rotated: await stack.metric("sessiond_refreshes_total", 'outcome="rotated"'),
    // A token refreshed twice (two tabs racing) converges; a stale one presented late is reuse.
    converged: await stack.metric("sessiond_refreshes_total", 'outcome="converged"'),
    reissued: await stack.metric("sessiond_refreshes_total", 'outcome="reissued"'),
    reused: await stack.metric("sessiond_refreshes_total", 'outcome="reused"'),
  });
  const before = await outcomes();
  const started = Date.now();
  // A new schedule every run (SPA_SEED replays one); the seed is in every failure message.
  const seed0 = Number(process.env.SPA_SEED ?? Date.now() % 0x7fffffff);
  let seed = seed0;
  // mulberry32: 32-bit state, uniform in [0, 1).
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  let reloads = 0;
  for (let round = 0; round < 50; round++) {
    const action = random();
    const tab = Math.floor(random() * tabs.length);
    if (action < 0.1) {
      // A tab reloaded: its in-memory token is gone; it asks the others before refreshing.
      await tabs[tab].reload();
      await tabs[tab].waitForFunction(() => window.spa?.ready);
      await tabs[tab].evaluate(() => window.spa.ready);
      reloads++;
    } else {
      // Some tabs call the API at once, a few times each.
      const callers = tabs.filter(() => random() < 0.6);
      const calls = 1 + Math.floor(random() * 4);
      const statuses = await Promise.all(
        callers.map((t) =>
          t.evaluate(async (n) => {
            const answers = await Promise.all(
              Array.from({ length: n }, () => window.spa.sessiond.fetch("/api/me")),
            );
            return answers.map((a) => a.status);
          }, calls),
        ),
      );
      assert.ok(statuses.flat().every((s) => s === 200), `seed ${seed0}, round ${round}: ${statuses}`);
    }
    await new Promise((ok) => setTimeout(ok, 100 + random() * 400));
  }
  const elapsed = Date.now() - started;
  const after = await outcomes();
  const delta = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
  // Each token is refreshed once, by one tab, whatever the number of tabs: no token presented
  // twice (converged), none presented after its successor was used (reused), no re-issue; and
  // no more rotations than one per refresh interval (uncoordinated, five tabs would make five).
  const bound = Math.ceil(elapsed / MIN_REFRESH_INTERVAL_MS) + 1;
  t.diagnostic(`seed ${seed0}: ${JSON.stringify(delta)} in ${elapsed} ms, ${reloads} reloads, bound ${bound}`);
  assert.ok(delta.rotated >= 1, "no refresh in the whole run");
  assert.ok(delta.rotated <= bound, `seed ${seed0}: ${JSON.stringify(delta)} in ${elapsed} ms (bound ${bound}, reloads ${reloads})`);
  assert.deepEqual(
    { ...delta, rotated: 0 },
    { rotated: 0, converged: 0, reissued: 0, reused: 0 },
    `seed ${seed0}`,
  );
  for (const tab of tabs) {
    assert.deepEqual(await tab.evaluate(() => window.spa.seen.ends), []);
    assert.equal(await tab.isVisible("#app-view"), true);
  }
  await context.close();
});

test("a tab closed mid-refresh: back after the grace window, still logged in", async () => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  const app = await openApp(context, stack);
  await loginThroughForm(app);
  await app.close();
  const reissuedBefore = await stack.metric("sessiond_refreshes_total", 'outcome="reissued"');

  // The refresh reaches sessiond (which rotates the refresh token) but its answer never reaches
  // the browser: the tab is closed first, so the browser keeps the old refresh cookie. The test
  // forwards the first request itself and then fails it in the browser; nothing of this tab,
  // not a retry, nor the request left pending when the tab closes, reaches sessiond on its own
  // (a request left unhandled could be let through at close and bring the new cookie home).
  const page = await openBare(context, stack);
  let reached;
  const upstream = new Promise((ok) => (reached = ok));
  let forwarded = false;
  await page.route(`${stack.sessiondOrigin}/auth/browser/refresh`, async (route) => {
    if (!forwarded) {
      forwarded = true;
      const headers = await route.request().allHeaders();
      const answer = await fetch(`${stack.internal}/auth/browser/refresh`, {
        method: "POST",
        headers: { origin: headers.origin, cookie: headers.cookie },
      });
      reached(answer.status);
    }
    await route.abort("connectionreset").catch(() => {});
  });
  await page.evaluate((baseUrl) => {
    window.s = Sessiond.createSessiond({ baseUrl, liveEnd: false });
    window.s.getAccessToken();
  }, stack.sessiondOrigin);
  assert.equal(await upstream, 200);
  await page.close();

  await new Promise((ok) => setTimeout(ok, 1500)); // past refresh_grace (1 s)
  const back = await openApp(context, stack);
  assert.equal(await back.isVisible("#app-view"), true);
  assert.deepEqual(await back.evaluate(() => window.spa.seen.ends), []);
  const after = {};
  for (const outcome of ["rotated", "converged", "reissued", "reused"]) {
    after[outcome] = await stack.metric("sessiond_refreshes_total", `outcome="${outcome}"`);
  }
  assert.equal(after.reissued - reissuedBefore, 1, `outcomes since the start: ${JSON.stringify(after)}`);
  await context.close();
});

test("logout in one tab: every tab knows within a second", async (t) => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  const tabs = [await openApp(context, stack)];
  await loginThroughForm(tabs[0]);
  for (let i = 1; i < 3; i++) tabs.push(await openApp(context, stack));
  const at = await tabs[1].evaluate(() => {
    const t = Date.now();
    document.querySelector("#logout").click();
    return t;
  });
  for (const tab of tabs) {
    await tab.waitForFunction(() => window.spa.seen.ends.length > 0, null, { timeout: 5000 });
    const [end] = await tab.evaluate(() => window.spa.seen.ends);
    assert.equal(end.reason, "logout");
    t.diagnostic(`a tab learnt of the logout after ${end.at - at} ms`);
    assert.ok(end.at - at <= 1000, `a tab learnt of the logout after ${end.at - at} ms`);
    assert.equal(await tab.isVisible("#login-view"), true);
  }
  await context.close();
});

test("an admin revocation reaches every open tab within a second", async (t) => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  const tabs = [await openApp(context, stack)];
  await loginThroughForm(tabs[0]);
  for (let i = 1; i < 3; i++) tabs.push(await openApp(context, stack));
  const sessionId = await tabs[0].getAttribute("#devices tr.current", "data-session-id");
  // The leader tab's stream is open before the revocation.
  await waitFor(async () => (await stack.metric("sessiond_event_streams_open")) >= 1, 5000);
  const at = Date.now();
  const revoked = await stack.api("POST", `/v1/sessions/${sessionId}/revoke`, {
    reason: "admin_revoked",
  });
  assert.equal(revoked.status, 204);
  for (const tab of tabs) {
    await tab.waitForFunction(() => window.spa.seen.ends.length > 0, null, { timeout: 5000 });
    const [end] = await tab.evaluate(() => window.spa.seen.ends);
    assert.equal(end.reason, "revoked");
    t.diagnostic(`a tab learnt of the revocation after ${end.at - at} ms`);
    assert.ok(end.at - at <= 1000, `a tab learnt of the revocation after ${end.at - at} ms`);
  }
  await context.close();
});

test("a foreign origin is refused: no CORS answer, a console hint, 403 on the server", async () => {
  const stack = stacks.cross;
  const context = await browser.newContext();
  // The same application served from another site (127.0.0.1 is not localhost's site).
  const foreign = stack.appOrigin.replace("localhost", "127.0.0.1");
  const page = await context.newPage();
  const warnings = [];
  page.on("console", (m) => m.type() === "warning" && warnings.push(m.text()));
  await page.goto(foreign);
  await page.waitForFunction(() => window.spa?.ready);
  await page.evaluate(() => window.spa.ready);
  assert.equal(await page.isVisible("#login-view"), true);
  await waitFor(async () => warnings.some((w) => w.includes("cookies.allowed_origins")), 5000);

  for (const [method, headers] of [
    ["POST", { origin: foreign }],
    ["POST", { origin: "http://evil.example" }],
    ["OPTIONS", { origin: foreign, "access-control-request-method": "POST" }],
  ]) {
    const answer = await fetch(`${stack.internal}/auth/browser/refresh`, { method, headers });
    assert.equal(answer.status, 403, `${method} from ${headers.origin}`);
    assert.equal((await answer.json()).code, "origin_not_allowed");
    assert.equal(answer.headers.get("access-control-allow-origin"), null);
  }
  await context.close();
});

test("the account page lists this user's devices and revokes them", async () => {
  const stack = stacks.cross;
  const firefox =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";
  // Earlier tests left sessions of these users: start from none.
  for (const user of ["alice", "bob"]) {
    assert.equal((await stack.api("POST", `/v1/users/${user}/sessions/revoke`, {})).status, 200);
  }
  const laptop = await browser.newContext({ viewport: { width: 900, height: 600 } });
  const phone = await browser.newContext({ userAgent: firefox });
  const other = await browser.newContext();
  const mine = await openApp(laptop, stack);
  await loginThroughForm(mine);
  const second = await openApp(phone, stack);
  await loginThroughForm(second);
  const bobs = await openApp(other, stack);
  await loginThroughForm(bobs, "bob");

  await mine.evaluate(() => window.spa.devices());
  await mine.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length === 2);
  const rows = await mine.$$eval("#devices tbody tr", (trs) =>
    trs.map((tr) => ({ id: tr.dataset.sessionId, current: tr.className === "current", text: tr.textContent })),
  );
  assert.equal(rows.filter((r) => r.current).length, 1);
  const phoneRow = rows.find((r) => !r.current);
  assert.match(phoneRow.text, /Firefox/);
  assert.match(phoneRow.text, /Windows/);
  const shot = await mine.screenshot({ fullPage: true });
  await saveArtifact("account-page.png", shot);
  assertPng(shot);

  // Bob sees only his own session and cannot touch Alice's.
  const bobView = await bobs.evaluate(async ({ baseUrl, id }) => {
    const s = window.spa.sessiond;
    const list = await (await s.fetch(`${baseUrl}/auth/browser/sessions`)).json();
    const revoke = await s.fetch(`${baseUrl}/auth/browser/sessions/${id}/revoke`, { method: "POST" });
    return { count: list.sessions.length, revoke: revoke.status };
  }, { baseUrl: stack.sessiondOrigin, id: phoneRow.id });
  assert.deepEqual(bobView, { count: 1, revoke: 404 });

  // Revoke the phone from the laptop: the row goes, and the phone's tab learns it.
  await mine.click(`#devices tr[data-session-id="${phoneRow.id}"] button`);
  await mine.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length === 1);
  await second.waitForFunction(() => window.spa.seen.ends.length > 0, null, { timeout: 5000 });
  assert.equal((await second.evaluate(() => window.spa.seen.ends))[0].reason, "revoked");
  const after = await mine.screenshot({ fullPage: true });
  await saveArtifact("account-page-after-revoke.png", after);
  assertPng(after);
  assert.notDeepEqual(after, shot);

  // "Log out all other devices" ends every other session of Alice and only those.
  const again = await openApp(phone, stack);
  await loginThroughForm(again);
  await mine.evaluate(() => window.spa.devices());
  await mine.waitForFunction(() => document.querySelectorAll("#devices tbody tr").length === 2);
  await mine.click("#revoke-others");
  await mine.waitForFunction(() => /Logged out 1 other device/.test(document.querySelector("#status").textContent));
  await again.waitForFunction(() => window.spa.seen.ends.length > 0, null, { timeout: 5000 });
  assert.deepEqual(await mine.evaluate(() => window.spa.seen.ends), []);
  assert.deepEqual(await bobs.evaluate(() => window.spa.seen.ends), []);
  for (const c of [laptop, phone, other]) await c.close();
});

/** A PNG whose header names a picture of a plausible size (the artefact is a real screenshot). */
function assertPng(bytes) {
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  assert.ok(width >= 300 && height >= 200, `screenshot ${width}x${height}`);
  assert.ok(bytes.length > 5000, `screenshot of ${bytes.length} bytes looks empty`);
}
