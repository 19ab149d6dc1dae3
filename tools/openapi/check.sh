#!/usr/bin/env bash
# The OpenAPI step of `scripts/test`: `/openapi.json` is valid OpenAPI 3.1 and true of the server.
#
# 1. Installs the pinned Python tools (requirements.txt) into target/openapi-venv (kept between
#    runs, rebuilt when requirements.txt changes) and the pinned Node tools (package-lock.json)
#    into tools/openapi/node_modules (`npm ci`, again only when the lock file changes).
# 2. Builds the debug `sessiond` (with the workspace's test build) and starts it on a free port of
#    127.0.0.1 with a temporary data directory (SQLite) and a bootstrap API key; stops it and
#    removes the directory at the end.
# 3. Fetches /openapi.json and checks it with openapi-spec-validator.
# 4. Runs Schemathesis against the server: every default check, fixed seed, bounded by
#    max-examples (schemathesis.toml), and by `timeout` as a backstop.
# 5. Generates TypeScript types from the document (openapi-typescript) and type-checks
#    client.ts, a small client that uses them (tsc, strict).
# Any failure fails the script. Runs in a couple of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."

HERE=tools/openapi
VENV=target/openapi-venv
log() { printf '==> openapi: %s\n' "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
  log "installing $HERE/requirements.txt into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" >"$VENV/.requirements.sha256"
fi
want="$(sha256sum "$HERE/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$HERE/node_modules/.package-lock.sha256" 2>/dev/null)" != "$want" ]]; then
  log "npm ci in $HERE"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$HERE/node_modules/.package-lock.sha256"
fi

# --- server --------------------------------------------------------------------------------
# The binary as the test build makes it (`cargo nextest run --workspace` runs this same build, so
# after it this is a no-op; `cargo build -p sessiond-server` would resolve other dependency
# features and compile a second copy of most dependencies).
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sessiond-openapi.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo test --no-run --workspace >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
export SESSIOND_API_KEY
SESSIOND_API_KEY="openapi-check-$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
SESSIOND_LOG=warn target/debug/sessiond serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
fetch() { # $1 = path, $2 = output file
  python3 - "$BASE$1" "$2" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
}
for _ in $(seq 1 300); do
  fetch /healthz /dev/null 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
log "sessiond on $BASE"
fetch /openapi.json "$WORK/openapi.json"

# --- checks --------------------------------------------------------------------------------
status=0
log "openapi-spec-validator"
"$VENV/bin/openapi-spec-validator" --validation-errors all "$WORK/openapi.json" || status=1

log "schemathesis (every default check; settings in $HERE/schemathesis.toml)"
# Hypothesis keeps caches in the working directory unless told otherwise: keep them in $WORK.
HYPOTHESIS_STORAGE_DIRECTORY="$WORK/hypothesis" timeout 300 "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" --no-color \
  run "$BASE/openapi.json" || status=1

log "generated client: openapi-typescript + tsc"
mkdir -p "$HERE/generated"
(cd "$HERE" && npx --no-install openapi-typescript "$WORK/openapi.json" -o generated/sessiond.d.ts \
  && npx --no-install tsc -p tsconfig.json) || status=1

if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  log "the server died during the checks:"; cat "$WORK/server.log" >&2; status=1
fi
if [[ "$status" != 0 ]]; then
  log "FAILED (server log follows)"; tail -n 50 "$WORK/server.log" >&2
else
  log "passed"
fi
exit "$status"
