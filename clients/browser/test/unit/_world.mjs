// Test fakes: a virtual clock, Web Locks, a scripted sessiond, and "tabs" (one SDK instance each,
// with its own document/window/navigator) that share one real BroadcastChannel name.
import { createHash } from "node:crypto";
import { createSessiond } from "../../dist/sessiond.mjs";

/** Lets real macrotasks (BroadcastChannel delivery, fake network) run. */
export const settle = async (n = 8) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/** Virtual time: timers run only inside `run(ms)`, in order, with the event loop settled between them. */
export class Clock {
  t = 1_000_000;
  id = 0;
  timers = new Map();
  now = () => this.t;
  setTimeout = (fn, ms = 0) => {
    const id = ++this.id;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, id });
    return id;
  };
  clearTimeout = (id) => void this.timers.delete(id);
  async run(ms) {
    const end = this.t + ms;
    for (;;) {
      await settle();
      let next;
      for (const x of this.timers.values())
        if (x.at <= end && (!next || x.at < next.at || (x.at === next.at && x.id < next.id))) next = x;
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
    }
    this.t = end;
    await settle();
  }
}

/** navigator.locks: exclusive, FIFO, `request(name, [options], cb)` with `options.signal`. */
export class FakeLocks {
  state = new Map();
  request(name, opts, cb) {
    if (typeof opts === "function") [cb, opts] = [opts, {}];
    let st = this.state.get(name);
    if (!st) this.state.set(name, (st = { held: null, waiters: [] }));
    return new Promise((res, rej) => {
      const w = {
        grant: () => {
          st.held = w;
          Promise.resolve()
            .then(() => cb({ name, mode: "exclusive" }))
            .then(res, rej)
            .finally(() => {
              st.held = null;
              this.next(st);
            });
        },
      };
      opts.signal?.addEventListener("abort", () => {
        const i = st.waiters.indexOf(w);
        if (i >= 0) {
          st.waiters.splice(i, 1);
          rej(new DOMException("aborted", "AbortError"));
        }
      });
      st.waiters.push(w);
      this.next(st);
    });
  }
  next(st) {
    if (!st.held && st.waiters.length) st.waiters.shift().grant();
  }
  holder(name) {
    return this.state.get(name)?.held ?? null;
  }
}

const json = (status, body) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const sha256b64url = (s) => createHash("sha256").update(s, "ascii").digest("base64url");

/** A scripted sessiond: counts calls, answers as the contract says. */
export class FakeSessiond {
  constructor(clock) {
    this.clock = clock;
    this.ttl = 60; // expires_in, seconds
    this.gen = 0;
    this.alive = true; // the refresh cookie is good
    this.mode = "ok"; // "ok" | 503 | "network"
    this.apiAlwaysExpired = false;
    this.calls = { refresh: 0, login: 0, logout: 0, events: 0, api: 0 };
    this.refreshTimes = [];
    this.codes = new Map();
    this.valid = new Set();
    this.expired = new Set();
    this.streams = new Set();
    this.violations = [];
    this.nextCode = 0;
    this.latency = 0; // virtual ms before an answer
    this.refreshLatency = 0; // virtual ms between a refresh's decision and its answer
  }
  newCode(challenge) {
    const code = "code-" + ++this.nextCode;
    this.codes.set(code, challenge);
    return code;
  }
  issue() {
    const t = "at-" + ++this.gen;
    this.valid.add(t);
    return { access_token: t, expires_in: this.ttl, expires_at: "2026-12-03T00:00:00Z" };
  }
  /** Ends the session: every open events stream gets `event: ended` and closes. */
  endSession(reason, detail) {
    this.alive = false;
    const data = JSON.stringify({ session_id: "s1", reason, detail, at: "2026-12-03T00:00:00Z" });
    for (const c of this.streams) {
      c.enqueue(new TextEncoder().encode(`: keep-alive\n\nevent: ended\ndata: ${data}\n\n`));
      c.close();
    }
    this.streams.clear();
  }
  /** Closes every stream without an event (server shutdown). */
  dropStreams() {
    for (const c of this.streams) c.close();
    this.streams.clear();
  }
  fetch = async (input, init = {}) => {
    await new Promise((r) => setImmediate(r));
    if (this.latency) await new Promise((r) => this.clock.setTimeout(r, this.latency));
    const url = new URL(typeof input === "string" ? input : input.url ?? String(input));
    const path = url.pathname;
    const headers = new Headers(init.headers ?? input.headers);
    if (path.startsWith("/auth/browser/") && (init.credentials !== "include" || init.cache !== "no-store"))
      this.violations.push(path);
    if (this.mode === "network") throw new TypeError("Failed to fetch");
    const bearer = (headers.get("authorization") || "").replace(/^Bearer /, "");
    switch (path) {
      case "/auth/browser/refresh":
        this.calls.refresh++;
        this.refreshTimes.push(this.clock.t);
        if (this.mode === 503) return json(503, { code: "unavailable" });
        if (!this.alive) return json(401, { code: "unauthorized" });
        {
          const ans = json(200, this.issue());
          if (this.refreshLatency) await new Promise((r) => this.clock.setTimeout(r, this.refreshLatency));
          return ans;
        }
      case "/auth/browser/login": {
        this.calls.login++;
        const { code, code_verifier } = JSON.parse(init.body);
        const ch = this.codes.get(code);
        if (!ch || sha256b64url(code_verifier) !== ch) return json(401, { code: "unauthorized" });
        this.codes.delete(code);
        this.alive = true;
        this.lastVerifier = code_verifier;
        return json(200, { ...this.issue(), session_id: "s1" });
      }
      case "/auth/browser/logout":
        this.calls.logout++;
        if (!this.alive) return json(401, { code: "unauthorized" });
        this.alive = false;
        return new Response(null, { status: 204 });
      case "/auth/browser/events": {
        this.calls.events++;
        if (!this.valid.has(bearer) || !this.alive) return json(401, { code: "unauthorized" });
        let ctrl;
        const body = new ReadableStream({ start: (c) => void (ctrl = c) });
        this.streams.add(ctrl);
        init.signal?.addEventListener("abort", () => {
          this.streams.delete(ctrl);
          try {
            ctrl.error(new DOMException("aborted", "AbortError"));
          } catch {}
        });
        ctrl.enqueue(new TextEncoder().encode(": keep-alive\n\n"));
        return new Response(body, { status: 200, headers: { "content-type": "text/event-stream" } });
      }
      case "/api/data":
        this.calls.api++;
        if (this.apiAlwaysExpired || this.expired.has(bearer)) return json(401, { code: "token_expired" });
        if (!this.valid.has(bearer)) return json(401, { code: "unauthorized" });
        return json(200, { ok: true, token: bearer });
      default:
        return json(404, { code: "not_found" });
    }
  };
}

let worlds = 0;

/** One browser: a clock, a sessiond, shared locks and channel name; `tab()` opens an SDK instance. */
export function world() {
  const clock = new Clock();
  const server = new FakeSessiond(clock);
  const locks = new FakeLocks();
  const name = `test-${process.pid}-${++worlds}`;
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const tabs = [];
  function tab(opts = {}, env = {}) {
    const win = new EventTarget();
    const doc = new EventTarget();
    doc.visibilityState = "visible";
    const warns = [];
    const ends = [];
    const e = {
      performance: { now: clock.now },
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      random,
      navigator: { onLine: true, locks },
      document: doc,
      BroadcastChannel,
      crypto: globalThis.crypto,
      console: { warn: (...a) => warns.push(a.join(" ")) },
      location: { origin: "https://app.example.com" },
      addEventListener: win.addEventListener.bind(win),
      removeEventListener: win.removeEventListener.bind(win),
      ...env,
    };
    const sd = createSessiond({
      baseUrl: "https://auth.example.com",
      fetch: server.fetch,
      channelName: name,
      liveEnd: false,
      onSessionEnd: (r) => ends.push(r),
      _env: e,
      ...opts,
    });
    const t = {
      sd,
      env: e,
      ends,
      warns,
      setVisible(v) {
        doc.visibilityState = v ? "visible" : "hidden";
        doc.dispatchEvent(new Event("visibilitychange"));
      },
      setOnline(v) {
        e.navigator.onLine = v;
        win.dispatchEvent(new Event(v ? "online" : "offline"));
      },
    };
    tabs.push(t);
    return t;
  }
  /** beginLogin → (backend makes a code) → login. */
  async function login(t) {
    const { codeChallenge } = await t.sd.beginLogin();
    await t.sd.login(server.newCode(codeChallenge));
  }
  /** Runs `p` while the virtual clock moves `ms`. */
  async function during(p, ms = 1000) {
    let out, err, done = false;
    const q = p.then((v) => ((out = v), (done = true)), (e) => ((err = e), (done = true)));
    await clock.run(ms);
    await settle();
    if (!done) throw new Error("still pending after " + ms + " virtual ms");
    await q;
    if (err) throw err;
    return out;
  }
  return { clock, server, locks, name, tab, tabs, login, during, close: () => tabs.forEach((t) => t.sd.close()) };
}
