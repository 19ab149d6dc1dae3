/**
 * @sessiond/browser — the browser side of sessiond's browser sessions.
 *
 * The access token lives only in this module's memory; the refresh token is sessiond's
 * HttpOnly SameSite=Strict cookie and never visible here. Tabs of one origin share tokens
 * over a BroadcastChannel and take turns refreshing under a Web Lock, so one refresh cookie
 * is never presented twice far apart (docs/DESIGN.md §3.3).
 */
import { b64url, httpError, readSse } from "./util";

export interface SessiondOptions {
  /** sessiond's origin, e.g. "https://auth.example.com", or "" (same origin). */
  baseUrl: string;
  /** Seconds before expiry to refresh proactively (default 30, capped at half the lifetime). */
  refreshMargin?: number;
  onSessionEnd?: (reason: EndReason) => void;
  /** Injectable for tests. */
  fetch?: typeof fetch;
  /** BroadcastChannel / lock name suffix (default derived from baseUrl). */
  channelName?: string;
  /** Default true: one leader tab holds /auth/browser/events and tells the others when the session ends. */
  liveEnd?: boolean;
}

export type EndReason = "logout" | "revoked" | "reuse_detected" | "expired" | "unauthorized";

export interface Sessiond {
  /** Makes and keeps (in memory) a PKCE verifier; send the challenge to your backend with the login form. */
  beginLogin(): Promise<{ codeChallenge: string; codeChallengeMethod: "S256" }>;
  /** POST /auth/browser/login with the kept verifier (cleared either way). */
  login(code: string): Promise<void>;
  /** Single-flight; null when logged out (after onSessionEnd). */
  getAccessToken(): Promise<string | null>;
  /** Attaches Bearer; 401 token_expired → refresh once, retry once. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  logout(): Promise<void>;
  onSessionEnd(cb: (reason: EndReason) => void): () => void;
  readonly loggedIn: boolean;
  /** Stop timers, channel, stream (tests, teardown). */
  close(): void;
}

type Msg =
  | { t: "token"; token: string; expiresInMs: number }
  | { t: "ask" }
  | { t: "end"; reason: EndReason };

/** Keep the refresh lock this long after handing a new token out, so peers see it before they get the lock. */
const HOLD = 50;
/** How long a new tab waits for a peer's token before refreshing itself. */
const ASK_WAIT = 100;
const REASONS = ["logout", "revoked", "reuse_detected", "expired"];

export function createSessiond(o: SessiondOptions): Sessiond {
  // `_env` (undocumented): replaces globalThis for tests (timers, clock, navigator, document, ...).
  const G: any = (o as any)._env || globalThis;
  const base = o.baseUrl.replace(/\/+$/, "");
  const name = o.channelName || base || "self";
  const F: typeof fetch = o.fetch || ((i, n) => G.fetch(i, n));
  const nav = G.navigator || {};
  const doc = G.document;
  const locks = nav.locks;
  const BC = G.BroadcastChannel;
  const now = (): number => G.performance.now();
  const rand = (): number => (G.random || Math.random)();
  const hidden = () => doc && doc.visibilityState == "hidden";
  let off = false; // from the `offline` / `online` events
  const offline = () => off || nav.onLine === false;

  let token: string | null = null;
  let exp = 0; // monotonic deadline (ms, performance.now())
  let life = 0; // lifetime of the current token (ms)
  let seq = 0; // bumps with every token received
  let ended = false;
  let had = false; // this tab has held a token (a session that can end, as opposed to none yet)
  let epoch = 0; // bumps with every end: a refresh answer from before an end is discarded
  let closed = false;
  let asked = false;
  let verifier: string | undefined;
  let flight: Promise<string | null> | null = null;
  let fails = 0;
  let nextTry = 0;
  let timer: any;
  let warned = false;
  let stream: AbortController | undefined;
  let leader: AbortController | undefined;
  const subs = new Set<(r: EndReason) => void>();
  let wakers: (() => void)[] = []; // woken on every new token, `online` and close()
  if (o.onSessionEnd) subs.add(o.onSessionEnd);

  const wake = () => {
    const w = wakers;
    wakers = [];
    w.forEach((f) => f());
  };
  /** Waits for a wake-up, or `ms` when given. */
  const pause = (ms?: number) =>
    new Promise<void>((r) => {
      wakers.push(r);
      if (ms != null) G.setTimeout(r, ms);
    });
  const sleep = (ms: number) => new Promise((r) => G.setTimeout(r, ms));
  const backoff = (n: number) => Math.min(60e3, 1e3 * 2 ** Math.min(n - 1, 6)) * (0.5 + rand() / 2);
  const fresh = () => token != null && now() < exp - 1e3;

  const ch: BroadcastChannel | null = BC ? new BC("sessiond:" + name) : null;
  const post = (m: Msg) => {
    try {
      ch && ch.postMessage(m);
    } catch {
      /* closed */
    }
  };
  const share = () => fresh() && post({ t: "token", token: token!, expiresInMs: exp - now() });

  /** Token and lifetime (ms) of a login/refresh answer; `expires_in` is clock-independent, `expires_at` a fallback. */
  const got = async (r: Response): Promise<[string, number]> => {
    const b = await r.json();
    if (typeof b.access_token != "string") throw new Error("sessiond: no access_token in the answer");
    const ms = typeof b.expires_in == "number" ? b.expires_in * 1e3 : Date.parse(b.expires_at) - Date.now();
    return [b.access_token, ms > 0 ? ms : 6e4];
  };

  const setToken = (t: string, inMs: number) => {
    token = t;
    had = true;
    life = inMs;
    exp = now() + inMs;
    seq++;
    ended = false;
    fails = nextTry = 0;
    schedule();
    wake();
  };

  const end = (reason: EndReason, tell: boolean) => {
    if (tell) post({ t: "end", reason });
    epoch++;
    token = null;
    exp = 0;
    G.clearTimeout(timer);
    stream && stream.abort();
    if (ended) return;
    ended = true;
    subs.forEach((cb) => {
      try {
        cb(reason);
      } catch (e) {
        G.setTimeout(() => {
          throw e;
        });
      }
    });
  };

  if (ch)
    ch.onmessage = (e: MessageEvent) => {
      const m = e.data as Msg;
      if (closed || !m) return;
      if (m.t == "token") {
        if (typeof m.token == "string" && m.token != token && now() + m.expiresInMs > exp) setToken(m.token, m.expiresInMs);
      } else if (m.t == "ask") share();
      else if (m.t == "end") end(m.reason, false);
    };

  /** One request to sessiond; a network TypeError (what a CORS refusal looks like) gets one hint. */
  const req = async (path: string, init: RequestInit, body?: unknown) => {
    try {
      return await F(base + path, {
        method: "POST",
        credentials: "include",
        cache: "no-store",
        ...(body ? { headers: { "content-type": "application/json" }, body: JSON.stringify(body) } : {}),
        ...init,
      });
    } catch (e: any) {
      if (!warned && e && e.name == "TypeError") {
        warned = true;
        const origin = G.location && G.location.origin;
        G.console.warn(
          `sessiond: ${base + path} failed with a network error. If sessiond is on another origin, ` +
            `its cookies.allowed_origins must list this page's origin (${origin}), else the browser refuses the answer (CORS).`,
        );
      }
      throw e;
    }
  };

  /** Runs `fn` under the cross-tab refresh lock (or directly when Web Locks are missing). */
  const locked = (fn: () => Promise<[string | null, boolean]>): Promise<string | null> =>
    locks
      ? new Promise((res, rej) =>
          locks
            .request("sessiond-refresh:" + name, async () => {
              let held = false;
              try {
                const [t, did] = await fn();
                held = did;
                res(t);
              } catch (e) {
                rej(e);
              }
              if (held) await sleep(HOLD);
            })
            .catch(rej),
        )
      : fn().then(([t]) => t);

  async function run(): Promise<string | null> {
    const s = seq;
    if (!asked && ch && !token) {
      asked = true;
      post({ t: "ask" });
      await pause(ASK_WAIT);
      if (seq != s && fresh()) return token;
    }
    asked = true;
    while (offline() && !closed) await pause();
    if (nextTry > now()) await sleep(nextTry - now());
    if (closed || ended) return null;
    try {
      return await locked(async () => {
        if (seq != s && fresh()) return [token, false]; // a peer refreshed while we waited
        const e = epoch;
        const r = await req("/auth/browser/refresh", {});
        if (e != epoch) return [null, false]; // logged out meanwhile: drop the answer
        if (r.status == 401) {
          // A session this tab knew has ended; a page opened without one just has none.
          if (had) end("unauthorized", true);
          else ended = true;
          return [null, false];
        }
        if (!r.ok) throw await httpError(r, "refresh");
        setToken(...(await got(r)));
        share();
        return [token, true];
      });
    } catch (e) {
      nextTry = now() + backoff(++fails);
      throw e;
    }
  }

  const refresh = (): Promise<string | null> =>
    (flight ||= run().finally(() => {
      flight = null;
    }));

  /** Proactive refresh: `refreshMargin` (capped at half the lifetime) before expiry, minus jitter. */
  function schedule() {
    G.clearTimeout(timer);
    if (!token || closed || ended) return;
    const m = Math.min((o.refreshMargin ?? 30) * 1e3, life / 2);
    // never sooner than 5 s after a token arrives: a tiny lifetime must not become a refresh loop
    timer = G.setTimeout(tick, Math.max(5e3 - (now() - (exp - life)), exp - m - (rand() * m) / 2 - now()));
  }
  function tick() {
    if (hidden() || offline() || closed) return; // visibilitychange / online reschedule
    refresh().catch(() => {
      if (!closed && !ended) timer = G.setTimeout(tick, Math.max(0, nextTry - now()));
    });
  }

  const onVis = () => hidden() || schedule();
  const onOffline = () => void (off = true);
  const onOnline = () => {
    off = false;
    wake();
    schedule();
  };
  doc && doc.addEventListener && doc.addEventListener("visibilitychange", onVis);
  G.addEventListener && (G.addEventListener("online", onOnline), G.addEventListener("offline", onOffline));

  const getAccessToken = async (): Promise<string | null> =>
    closed || ended ? null : fresh() ? token : refresh();

  /** The leader tab keeps GET /auth/browser/events open while logged in. */
  async function lead() {
    let n = 0;
    while (!closed) {
      if (!token || ended) {
        await pause();
        continue;
      }
      const t0 = now();
      let t: string | null = null;
      try {
        t = await getAccessToken();
        if (t) {
          const ac = (stream = new AbortController());
          const r = await req("/auth/browser/events", {
            method: "GET",
            headers: { authorization: "Bearer " + t, accept: "text/event-stream" },
            signal: ac.signal,
          });
          if (r.ok && r.body) {
            await readSse(r.body, (ev, data) => {
              if (ev != "ended") return;
              let why: any;
              try {
                why = JSON.parse(data).reason;
              } catch {
                /* keep the default */
              }
              end(REASONS.includes(why) ? why : "revoked", true);
            });
          } else if (r.status == 401 && token == t) exp = 0; // refresh next; a dead session ends there
        }
      } catch {
        /* dropped: reopen with backoff */
      }
      stream = undefined;
      if (closed || ended) continue;
      if (now() - t0 > 30e3) n = 0;
      await pause(backoff(++n));
    }
  }
  if (o.liveEnd !== false && locks) {
    leader = new AbortController();
    locks.request("sessiond-leader:" + name, { signal: leader.signal }, lead).catch(() => {});
  }

  return {
    async beginLogin() {
      const b = new Uint8Array(32);
      G.crypto.getRandomValues(b);
      const v = (verifier = b64url(b));
      const h = await G.crypto.subtle.digest("SHA-256", new TextEncoder().encode(v));
      return { codeChallenge: b64url(new Uint8Array(h)), codeChallengeMethod: "S256" };
    },

    async login(code) {
      const v = verifier;
      verifier = undefined;
      if (!v) throw new Error("sessiond: call beginLogin() before login()");
      const r = await req("/auth/browser/login", {}, { code, code_verifier: v });
      if (!r.ok) throw await httpError(r, "login");
      asked = true;
      setToken(...(await got(r)));
      share();
    },

    getAccessToken,

    async fetch(input, init) {
      const send = (t: string | null) => {
        const isReq = typeof Request != "undefined" && input instanceof Request;
        const h = new Headers((init && init.headers) || (isReq ? (input as Request).headers : undefined));
        if (t) h.set("authorization", "Bearer " + t);
        return F(isReq ? (input as Request).clone() : input, { ...init, headers: h });
      };
      let t = await getAccessToken();
      let r = await send(t);
      if (r.status == 401 && t) {
        let code: unknown;
        try {
          code = (await r.clone().json()).code;
        } catch {
          /* not JSON */
        }
        if (code == "token_expired") {
          if (token == t) exp = 0;
          t = await getAccessToken();
          if (t) r = await send(t);
        }
      }
      return r;
    },

    async logout() {
      let err: unknown;
      try {
        const r = await req("/auth/browser/logout", {});
        if (!r.ok && r.status != 401) err = await httpError(r, "logout");
      } catch (e) {
        err = e;
      }
      end("logout", true);
      if (err) throw err;
    },

    onSessionEnd(cb) {
      subs.add(cb);
      return () => void subs.delete(cb);
    },

    get loggedIn() {
      return !ended && token != null;
    },

    close() {
      if (closed) return;
      closed = true;
      G.clearTimeout(timer);
      stream && stream.abort();
      leader && leader.abort();
      ch && ch.close();
      doc && doc.removeEventListener && doc.removeEventListener("visibilitychange", onVis);
      G.removeEventListener && (G.removeEventListener("online", onOnline), G.removeEventListener("offline", onOffline));
      wake();
    },
  };
}
