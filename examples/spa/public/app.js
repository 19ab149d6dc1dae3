// The SPA: a login form, one API call, and an account page ("your devices"), on the browser
// SDK (`/sessiond.js`, the SDK's script-tag build, global `Sessiond`). No framework.
const config = await (await fetch("/config.json", { cache: "no-store" })).json();
const $ = (selector) => document.querySelector(selector);

const sessiond = Sessiond.createSessiond({
  baseUrl: config.sessiondUrl,
  refreshMargin: config.refreshMargin,
});
// For the example's browser tests: what the page saw, never a token.
const seen = { ends: [] };
window.spa = { sessiond, seen, ready: null };

sessiond.onSessionEnd((reason) => {
  seen.ends.push({ reason, at: Date.now() });
  show(false, reason === "logout" ? "You are logged out." : `Your session ended (${reason}).`);
});

function show(loggedIn, status = "") {
  $("#login-view").hidden = loggedIn;
  $("#app-view").hidden = !loggedIn;
  $("#logout").hidden = !loggedIn;
  $("#status").textContent = status;
  if (!loggedIn) {
    $("#who").textContent = "";
    $("#devices tbody").replaceChildren();
  }
}

async function start() {
  // A tab opened while logged in gets the token from another tab or by one refresh.
  let token;
  try {
    token = await sessiond.getAccessToken();
  } catch {
    // sessiond unreachable, or refusing this origin (the SDK logs a hint in the console).
    show(false, "The sign-in service cannot be reached.");
    return;
  }
  if (token) {
    show(true);
    await Promise.all([whoAmI(), devices()]);
  } else {
    show(false);
  }
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const { codeChallenge } = await sessiond.beginLogin();
  const answer = await fetch("/api/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      username: form.get("username"),
      password: form.get("password"),
      code_challenge: codeChallenge,
    }),
  });
  if (!answer.ok) {
    $("#status").textContent = "Wrong user or password.";
    return;
  }
  const { login_code } = await answer.json();
  await sessiond.login(login_code);
  event.target.reset();
  show(true);
  await Promise.all([whoAmI(), devices()]);
});

$("#logout").addEventListener("click", () => sessiond.logout());

$("#call-api").addEventListener("click", async () => {
  const answer = await sessiond.fetch("/api/me");
  $("#api-result").textContent = answer.ok
    ? `Hello ${(await answer.json()).name}`
    : `refused (${answer.status})`;
});

$("#revoke-others").addEventListener("click", async () => {
  const answer = await sessiond.fetch(`${config.sessiondUrl}/auth/browser/sessions/revoke-others`, {
    method: "POST",
  });
  if (answer.ok) {
    const { revoked } = await answer.json();
    $("#status").textContent = `Logged out ${revoked} other device${revoked === 1 ? "" : "s"}.`;
  }
  await devices();
});

async function whoAmI() {
  const answer = await sessiond.fetch("/api/me");
  if (answer.ok) $("#who").textContent = `Signed in as ${(await answer.json()).name}`;
}

async function devices() {
  const answer = await sessiond.fetch(`${config.sessiondUrl}/auth/browser/sessions`);
  if (!answer.ok) return;
  const { sessions } = await answer.json();
  const rows = sessions.map((s) => {
    const row = document.createElement("tr");
    row.dataset.sessionId = s.id;
    if (s.current) row.className = "current";
    const d = s.device ?? {};
    const name = [d.browser, d.browser_version].filter(Boolean).join(" ") || "Unknown browser";
    // "Windows 10" already names its version; "Mac OSX" does not.
    const os = /\d$/.test(d.os ?? "") ? d.os : [d.os, d.os_version].filter(Boolean).join(" ");
    const cells = [
      os ? `${name} on ${os}` : name,
      new Date(s.created_at).toLocaleString(),
      new Date(s.last_seen_at).toLocaleString(),
      s.ip ?? "",
    ];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    const action = document.createElement("td");
    const button = document.createElement("button");
    button.textContent = s.current ? "Log out" : "Revoke";
    button.addEventListener("click", async () => {
      if (s.current) return sessiond.logout();
      await sessiond.fetch(`${config.sessiondUrl}/auth/browser/sessions/${s.id}/revoke`, {
        method: "POST",
      });
      await devices();
    });
    action.append(button);
    row.append(action);
    return row;
  });
  $("#devices tbody").replaceChildren(...rows);
}

window.spa.ready = start();
window.spa.devices = devices;
