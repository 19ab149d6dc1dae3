import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { world, settle } from "./_world.mjs";
import { createSessiond } from "../../dist/sessiond.mjs";

test("login sends the verifier whose SHA-256 is the challenge; the verifier is single-use", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  const b = w.tab();
  const { codeChallenge, codeChallengeMethod } = await a.sd.beginLogin();
  assert.equal(codeChallengeMethod, "S256");
  assert.match(codeChallenge, /^[A-Za-z0-9_-]{43}$/);
  await a.sd.login(w.server.newCode(codeChallenge));
  const v = w.server.lastVerifier;
  assert.match(v, /^[A-Za-z0-9_-]{43}$/, "32 random bytes, base64url without padding");
  assert.equal(createHash("sha256").update(v, "ascii").digest("base64url"), codeChallenge);
  assert.equal(a.sd.loggedIn, true);
  assert.equal(await a.sd.getAccessToken(), "at-1");
  await settle();
  assert.equal(await b.sd.getAccessToken(), "at-1", "the token is handed to the other tabs");
  await assert.rejects(a.sd.login("code-x"), /beginLogin/, "the verifier was cleared");
  assert.equal(w.server.calls.login, 1);
  assert.deepEqual(w.server.violations, []);
});

test("a refused login throws with status and code and clears the verifier", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  const first = await a.sd.beginLogin();
  const second = await a.sd.beginLogin();
  assert.notEqual(first.codeChallenge, second.codeChallenge);
  const code = w.server.newCode(first.codeChallenge); // the stale challenge: wrong verifier
  await assert.rejects(a.sd.login(code), (e) => e.status === 401 && e.code === "unauthorized");
  await assert.rejects(a.sd.login(code), /beginLogin/);
  assert.equal(a.sd.loggedIn, false);
  assert.deepEqual(a.ends, [], "a failed login is not a session end");
});

test("the token never touches localStorage, sessionStorage or document.cookie", async (t) => {
  const touched = [];
  const spy = (label) =>
    new Proxy(
      {},
      {
        get: (_, k) => (touched.push(`${label}.get ${String(k)}`), () => null),
        set: (_, k) => (touched.push(`${label}.set ${String(k)}`), true),
      },
    );
  const saved = { localStorage: globalThis.localStorage, sessionStorage: globalThis.sessionStorage };
  Object.defineProperty(globalThis, "localStorage", { value: spy("localStorage"), configurable: true, writable: true });
  Object.defineProperty(globalThis, "sessionStorage", { value: spy("sessionStorage"), configurable: true, writable: true });
  t.after(() => {
    for (const [k, v] of Object.entries(saved))
      Object.defineProperty(globalThis, k, { value: v, configurable: true, writable: true });
  });
  const w = world();
  t.after(w.close);
  const env = { localStorage: globalThis.localStorage, sessionStorage: globalThis.sessionStorage };
  const a = w.tab({ liveEnd: true }, env);
  const b = w.tab({ liveEnd: true }, env);
  for (const x of [a, b])
    Object.defineProperty(x.env.document, "cookie", {
      get: () => (touched.push("document.cookie get"), ""),
      set: () => touched.push("document.cookie set"),
    });
  await w.login(a);
  await w.during(b.sd.getAccessToken());
  await w.clock.run(200_000);
  await w.during(a.sd.fetch("https://api.example.com/api/data"));
  await a.sd.logout();
  await settle();
  assert.ok(w.server.calls.refresh > 0);
  assert.deepEqual(touched, []);
});

test("a CORS-like network TypeError logs exactly one hint naming cookies.allowed_origins", async (t) => {
  const w = world();
  t.after(w.close);
  const a = w.tab();
  w.server.mode = "network";
  await assert.rejects(w.during(a.sd.getAccessToken(), 500), TypeError);
  await assert.rejects(w.during(a.sd.getAccessToken(), 5_000), TypeError);
  const { codeChallenge } = await a.sd.beginLogin();
  await assert.rejects(a.sd.login(w.server.newCode(codeChallenge)), TypeError);
  await assert.rejects(a.sd.logout(), TypeError);
  assert.equal(a.warns.length, 1);
  assert.match(a.warns[0], /cookies\.allowed_origins/);
  assert.match(a.warns[0], /https:\/\/app\.example\.com/);
  assert.deepEqual(a.ends, ["logout"], "logout ends the local session even when the request failed");
});

test("default environment: globalThis with no navigator/document works as a single tab", async (t) => {
  const w = world();
  let calls = 0;
  const sd = createSessiond({
    baseUrl: "https://auth.example.com/",
    channelName: w.name + "-g",
    fetch: async (url, init) => {
      calls++;
      assert.equal(url, "https://auth.example.com/auth/browser/refresh");
      assert.equal(init.credentials, "include");
      assert.equal(init.cache, "no-store");
      return new Response(JSON.stringify({ access_token: "g-1", expires_in: 600, expires_at: "x" }), { status: 200 });
    },
  });
  t.after(() => sd.close());
  const [x, y] = await Promise.all([sd.getAccessToken(), sd.getAccessToken()]);
  assert.equal(x, "g-1");
  assert.equal(y, "g-1");
  assert.equal(calls, 1);
  assert.equal(sd.loggedIn, true);
});
