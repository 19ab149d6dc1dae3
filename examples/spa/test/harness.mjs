// Brings up what the browser tests need: the real sessiond binary on a fresh SQLite database,
// the example backend, and Debian's headless Chromium driven by playwright-core.
//
// Environment: SESSIOND_BIN (default: target/debug/sessiond of this repository, or
// $CARGO_TARGET_DIR/debug/sessiond), CHROMIUM (default /usr/bin/chromium).
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";
import { startBackend } from "../server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");
export const artifacts = join(here, "../artifacts");

function sessiondBin() {
  if (process.env.SESSIOND_BIN) return process.env.SESSIOND_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  return join(target, "debug/sessiond");
}

export async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/**
 * Starts sessiond and the example backend. `mode`: "same-origin" (the backend proxies
 * /auth/browser/*) or "cross-origin" (the page talks to sessiond on another origin of the same
 * site: another port of localhost). `toml`: extra configuration appended to the file.
 */
export async function startStack({ mode, toml = "", refreshMargin }) {
  const bin = sessiondBin();
  if (!existsSync(bin)) {
    throw new Error(`no sessiond binary at ${bin}: build it (cargo build -p sessiond-server) or set SESSIOND_BIN`);
  }
  const dir = await mkdtemp(join(tmpdir(), "sessiond-spa-"));
  const [sessiondPort, appPort] = [await freePort(), await freePort()];
  const appOrigin = `http://localhost:${appPort}`;
  const sessiondOrigin = `http://localhost:${sessiondPort}`;
  const apiKey = randomBytes(24).toString("base64url");
  const config = `listen = "127.0.0.1:${sessiondPort}"
data_dir = ${JSON.stringify(dir)}

[cookies]
allowed_origins = [${JSON.stringify(appOrigin)}]

${mode === "same-origin" ? '[sessions]\ntrusted_proxies = ["127.0.0.1"]\n' : ""}
${toml}
`;
  const configPath = join(dir, "sessiond.toml");
  await writeFile(configPath, config);
  const logs = [];
  // SESSIOND_* variables are configuration keys to sessiond: pass none but ours.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("SESSIOND_")),
  );
  const child = spawn(bin, ["--config", configPath, "serve"], {
    env: {
      ...env,
      SESSIOND_API_KEY: apiKey,
      SESSIOND_MASTER_KEY: randomBytes(32).toString("base64"),
      SESSIOND_LOG: "info,sqlx=warn",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d) => logs.push(d.toString()));
  child.stderr.on("data", (d) => logs.push(d.toString()));
  let exitCode = null;
  const exited = new Promise((ok) => child.once("exit", (code) => ok((exitCode = code ?? -1))));
  const internal = `http://127.0.0.1:${sessiondPort}`;
  await waitFor(
    async () => {
      if (exitCode !== null) throw new Error(`sessiond exited with ${exitCode}:\n${logs.join("")}`);
      return (await fetch(`${internal}/healthz`)).ok;
    },
    30_000,
    () => logs.join(""),
    () => exitCode !== null,
  );

  const backend = await startBackend({
    SPA_PORT: String(appPort),
    SPA_MODE: mode,
    SESSIOND_URL: internal,
    SESSIOND_PUBLIC_URL: sessiondOrigin,
    SESSIOND_API_KEY: apiKey,
    ...(refreshMargin ? { SPA_REFRESH_MARGIN: String(refreshMargin) } : {}),
  });

  async function api(method, path, body) {
    const answer = await fetch(`${internal}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await answer.text();
    return { status: answer.status, body: text && text.startsWith("{") ? JSON.parse(text) : text };
  }

  return {
    appOrigin,
    sessiondOrigin,
    internal,
    api,
    logs: () => logs.join(""),
    /** A counter of `/metrics`, summed over the label sets that contain `labels`. */
    async metric(name, labels = "") {
      const { body } = await api("GET", "/metrics");
      let sum = 0;
      for (const line of String(body).split("\n")) {
        if (!line.startsWith(name) || !line.includes(labels)) continue;
        const rest = line.slice(name.length);
        if (rest[0] !== "{" && rest[0] !== " ") continue;
        sum += Number(line.split(" ").pop());
      }
      return sum;
    },
    async stop() {
      backend.closeAllConnections?.();
      await new Promise((ok) => backend.close(ok));
      child.kill("SIGTERM");
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Background tabs would have their timers throttled: every tab of these tests is "open".
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
    ],
  });
}

export async function waitFor(check, timeoutMs, describe = () => "", hopeless = () => false) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
      if (hopeless()) throw e;
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms ${last ? `(${last.message})` : ""}\n${describe()}`);
}

/** Logs in through the page's form and waits for the account view. */
export async function loginThroughForm(page, user = "alice") {
  await page.fill('#login-form input[name="username"]', user);
  await page.fill('#login-form input[name="password"]', `${user}-demo`);
  await page.click('#login-form button[type="submit"]');
  await page.waitForSelector("#app-view:not([hidden])");
  await page.waitForSelector("#devices tbody tr");
}

export async function saveArtifact(name, bytes) {
  await mkdir(artifacts, { recursive: true });
  const path = join(artifacts, name);
  await writeFile(path, bytes);
  return path;
}
