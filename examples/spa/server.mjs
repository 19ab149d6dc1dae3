// The SPA example's backend: static files, a demo login, one API route, and (same-origin
// deployment only) a reverse proxy for sessiond's browser routes. Node.js, no dependencies.
//
// It shows what an application backend does beside a browser SDK:
// - authenticate the person (here: a fixed demo user table, NOT a real password store),
// - ask sessiond for the session, with the API key that only the backend holds:
//   - cross-origin deployment (`SPA_MODE=cross-origin`): a single-use login code bound to the
//     page's PKCE challenge (`POST /v1/browser/login-codes`), which the page exchanges at
//     sessiond's own origin, so the refresh cookie is set on sessiond's host;
//   - same-origin deployment (`SPA_MODE=same-origin`, the default): the same login code,
//     exchanged through this server, which proxies `/auth/browser/*` to sessiond — the page and
//     sessiond then share one origin and the refresh cookie is the application's;
// - validate the access token on its own API (`POST /v1/sessions/validate`), passing sessiond's
//   `token_expired` through so the SDK refreshes once and retries.
//
// Environment: SPA_PORT (default 3000), SPA_MODE, SESSIOND_URL (how this server reaches
// sessiond, default http://127.0.0.1:8080), SESSIOND_PUBLIC_URL (how the browser reaches
// sessiond in the cross-origin deployment, default SESSIOND_URL), SESSIOND_API_KEY (required),
// SPA_SDK (path of the SDK's script-tag build, default ../../clients/browser/dist/sessiond.iife.js),
// SPA_REFRESH_MARGIN (the SDK's refreshMargin, seconds).
import { createServer, request as httpRequest } from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));

export function startBackend(options = {}) {
  const env = { ...process.env, ...options };
  const mode = env.SPA_MODE ?? "same-origin";
  if (mode !== "same-origin" && mode !== "cross-origin") {
    throw new Error(`SPA_MODE must be same-origin or cross-origin, not ${mode}`);
  }
  const sessiond = new URL(env.SESSIOND_URL ?? "http://127.0.0.1:8080");
  const publicUrl = (env.SESSIOND_PUBLIC_URL ?? sessiond.origin).replace(/\/$/, "");
  const apiKey = env.SESSIOND_API_KEY;
  if (!apiKey) throw new Error("SESSIOND_API_KEY is required (the backend's API key)");
  const sdkPath = env.SPA_SDK ?? join(here, "../../clients/browser/dist/sessiond.iife.js");
  // The page's view of sessiond: its own origin when this server proxies, else sessiond's.
  const pageConfig = { mode, sessiondUrl: mode === "same-origin" ? "" : publicUrl };
  // The SDK's proactive refresh margin (seconds; its default, 30, when unset).
  if (env.SPA_REFRESH_MARGIN) pageConfig.refreshMargin = Number(env.SPA_REFRESH_MARGIN);

  async function sessiondApi(path, body) {
    const response = await fetch(new URL(path, sessiond), {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, "http://backend");
      if (mode === "same-origin" && url.pathname.startsWith("/auth/browser/")) {
        return proxy(req, res, sessiond);
      }
      if (req.method === "GET" && (url.pathname === "/" || url.pathname === "/index.html")) {
        return file(res, join(here, "public/index.html"), "text/html; charset=utf-8");
      }
      if (req.method === "GET" && url.pathname === "/app.js") {
        return file(res, join(here, "public/app.js"), "text/javascript; charset=utf-8");
      }
      if (req.method === "GET" && url.pathname === "/style.css") {
        return file(res, join(here, "public/style.css"), "text/css; charset=utf-8");
      }
      if (req.method === "GET" && url.pathname === "/sessiond.js") {
        return file(res, sdkPath, "text/javascript; charset=utf-8");
      }
      if (req.method === "GET" && url.pathname === "/config.json") {
        return json(res, 200, pageConfig);
      }
      if (req.method === "POST" && url.pathname === "/api/login") {
        return login(req, res);
      }
      if (req.method === "GET" && url.pathname === "/api/me") {
        return me(req, res);
      }
      json(res, 404, { code: "not_found" });
    } catch (e) {
      // Never echo request data: a failure here is the backend's, reported without detail.
      console.error("spa backend:", e?.message ?? e);
      if (!res.headersSent) json(res, 500, { code: "internal" });
      else res.destroy();
    }
  });

  async function login(req, res) {
    const body = await readJson(req);
    const user = DEMO_USERS.get(String(body?.username ?? ""));
    if (!user || user.password !== body?.password) {
      return json(res, 401, { code: "wrong_credentials" });
    }
    if (typeof body.code_challenge !== "string") {
      return json(res, 400, { code: "invalid_request" });
    }
    const answer = await sessiondApi("/v1/browser/login-codes", {
      user_id: user.id,
      claims: { name: user.name },
      code_challenge: body.code_challenge,
      code_challenge_method: "S256",
    });
    if (answer.status !== 201) return json(res, 502, { code: "sessiond_refused" });
    json(res, 200, { login_code: answer.body.login_code });
  }

  async function me(req, res) {
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    if (!token) return json(res, 401, { code: "unauthorized" });
    const answer = await sessiondApi("/v1/sessions/validate", { access_token: token });
    if (answer.status === 200) {
      const s = answer.body.session;
      return json(res, 200, { user_id: s.user_id, name: s.claims?.name ?? null, session_id: s.id });
    }
    if (answer.status === 401) {
      // `token_expired` tells the SDK to refresh and retry; anything else is "log in again".
      const code = answer.body?.code === "token_expired" ? "token_expired" : "unauthorized";
      return json(res, 401, { code });
    }
    json(res, 503, { code: "unavailable" });
  }

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(Number(env.SPA_PORT ?? 3000), "127.0.0.1", () => resolve(server));
  });
}

// The demo's people. A real backend checks passwords against its own store.
const DEMO_USERS = new Map([
  ["alice", { id: "alice", name: "Alice", password: "alice-demo" }],
  ["bob", { id: "bob", name: "Bob", password: "bob-demo" }],
]);

// Same-origin deployment: `/auth/browser/*` goes to sessiond as it is (cookies, Origin,
// Authorization), streamed both ways so the live-end event stream passes through. The peer
// address goes in X-Forwarded-For; list this server in sessiond's `sessions.trusted_proxies`.
function proxy(req, res, target) {
  const headers = { ...req.headers, host: target.host };
  const peer = req.socket.remoteAddress ?? "";
  headers["x-forwarded-for"] = headers["x-forwarded-for"]
    ? `${headers["x-forwarded-for"]}, ${peer}`
    : peer;
  const upstream = httpRequest(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) json(res, 502, { code: "unavailable" });
    else res.destroy();
  });
  res.on("close", () => upstream.destroy());
  req.pipe(upstream);
}

async function file(res, path, type) {
  const body = await readFile(path);
  res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
  res.end(body);
}

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}

async function readJson(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16 * 1024) throw new Error("request body too large");
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return null;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await startBackend();
  const { port } = server.address();
  console.log(`spa example on http://localhost:${port} (${process.env.SPA_MODE ?? "same-origin"})`);
}
