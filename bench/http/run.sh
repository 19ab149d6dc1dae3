#!/usr/bin/env bash
# HTTP load measurement: sessiond's validate endpoint against the axum + tower-sessions peer and
# its /floor (bare axum + hyper), interleaved in one sitting (docs/BENCHMARKS.md, "HTTP load
# (server)").
#
# Builds nothing. Give it the two release binaries:
#
#   bench/http/run.sh SESSIOND_BIN PEER_BIN
#
#   SESSIOND_BIN  e.g. target/release/sessiond   (cargo build --release -p sessiond-server)
#   PEER_BIN      e.g. ../shared/peers/tower-sessions-app/target/release/tower-sessions-app
#
# It starts three servers on loopback (sessiond, the peer with its defaults, the peer with
# PEER_ALWAYS_SAVE=1), each on a fresh store in a temporary directory; creates one cookie
# session on each with curl (and a fresh sessiond access token before every token run); then
# runs wrk with the peer README's settings (-t1 -c32 -d15s --latency), interleaving peer and
# sessiond runs, ROUNDS times; prints a table and the sessiond/peer ratios per round; stops the servers.
#
# Scenarios (per round; the order is reversed in even rounds so no scenario always runs first):
#   peer          GET  /validate, cookie `id`; tower-sessions default: no write, expiry NOT slid
#   sd-cookie     POST /v1/sessions/validate {"cookie": ...}; slides the idle window (one write
#                 per session per touch interval, 60 s by default)
#   peer-save     GET  /validate with PEER_ALWAYS_SAVE=1: sliding expiry, one write per request
#   sd-token      POST /v1/sessions/validate {"access_token": ...} (EdDSA, the default); a row
#                 read, no write
#   floor         GET  /floor on the peer: axum + hyper answering JSON with no session work,
#                 the HTTP cost every scenario pays on this machine (the ceiling of the others)
#   sd-healthz    GET  /healthz on sessiond: its whole middleware stack (metrics, connection
#                 tracking, body limits, routing) answering JSON with no session work; against
#                 floor, the cost of sessiond's middleware
#
# Every wrk run is checked: a "Non-2xx or 3xx responses" or "Socket errors" line marks the run
# INVALID (a 401 is small and fast and inflates the figures) and the script exits non-zero.
#
# Environment (all optional): ROUNDS (3), DURATION seconds per run (15), CONNECTIONS (32),
# THREADS (1), PAUSE seconds between runs (3), SESSIOND_PORT (18080), PEER_PORT (18090),
# PEER_SAVE_PORT (18091), KEEP=1 keeps the temporary directory (stores, logs, raw wrk output),
# QUIET_WAIT seconds (0): before each wrk run, wait up to this long for a 2 s window in which
# the machine is under 15 % busy (other engineers' compiles share the 2 cores); the run starts
# anyway when the wait runs out. Either way the "other CPU s" column shows what else ran, and a
# run during which anything else used more than 10 % of the machine is marked "busy" (kept in
# the table, flagged; the ratio rows of its round get a "*"). The limit is not lower because a
# run's own kernel-side work outside the two processes counts as "other" too: peer-save runs
# show 1.4-2 CPU-s of it per 15 s on a quiet box (probably I/O for its per-request writes).
#
# Bounded: each wrk run is killed after DURATION+30 s, each curl after 5 s, server start-up
# after 20 s; the whole run takes about ROUNDS * 6 * (DURATION + PAUSE) seconds plus ~10 s,
# plus up to QUIET_WAIT per run.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -eq 2 ]] || usage
SESSIOND_BIN=$(realpath "$1")
PEER_BIN=$(realpath "$2")
[[ -x $SESSIOND_BIN ]] || { echo "not executable: $SESSIOND_BIN" >&2; exit 2; }
[[ -x $PEER_BIN ]] || { echo "not executable: $PEER_BIN" >&2; exit 2; }

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
PAUSE=${PAUSE:-3}
QUIET_WAIT=${QUIET_WAIT:-0}
SESSIOND_PORT=${SESSIOND_PORT:-18080}
PEER_PORT=${PEER_PORT:-18090}
PEER_SAVE_PORT=${PEER_SAVE_PORT:-18091}
HERE=$(cd "$(dirname "$0")" && pwd)

for tool in wrk curl awk; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y $tool)" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-http-bench.XXXXXX")
mkdir -p "$WORK/wrk"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept: $WORK (stores, server logs, raw wrk output in wrk/)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$SESSIOND_PORT" "$PEER_PORT" "$PEER_SAVE_PORT"; do
    port_free "$p" || { echo "127.0.0.1:$p is already in use; set *_PORT" >&2; exit 2; }
done

CURL=(curl -sS --max-time 5)
# 30 random bytes -> 40 base64url characters (sessiond wants at least 32).
SESSIOND_API_KEY=$(head -c 30 /dev/urandom | base64 | tr '+/' '-_')
export SESSIOND_API_KEY

wait_http() { # url expected-status
    local i
    for i in $(seq 200); do
        [[ $("${CURL[@]}" -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true) == "$2" ]] && return 0
        sleep 0.1
    done
    echo "server at $1 did not come up; logs in $WORK (KEEP=1 keeps them)" >&2
    KEEP=1
    exit 1
}

# --- servers -------------------------------------------------------------------------------
"$SESSIOND_BIN" serve --listen "127.0.0.1:$SESSIOND_PORT" --data-dir "$WORK/sessiond" \
    >"$WORK/sessiond.log" 2>&1 &
PIDS+=($!); SESSIOND_PID=$!
PEER_LISTEN="127.0.0.1:$PEER_PORT" PEER_DB="$WORK/peer.db" "$PEER_BIN" \
    >"$WORK/peer.log" 2>&1 &
PIDS+=($!); PEER_PID=$!
PEER_ALWAYS_SAVE=1 PEER_LISTEN="127.0.0.1:$PEER_SAVE_PORT" PEER_DB="$WORK/peer-save.db" "$PEER_BIN" \
    >"$WORK/peer-save.log" 2>&1 &
PIDS+=($!); PEER_SAVE_PID=$!

SD="http://127.0.0.1:$SESSIOND_PORT"
wait_http "$SD/healthz" 200
wait_http "http://127.0.0.1:$PEER_PORT/validate" 401
wait_http "http://127.0.0.1:$PEER_SAVE_PORT/validate" 401

# --- credentials ---------------------------------------------------------------------------
sd_create() { # kind -> response body
    "${CURL[@]}" -X POST -H "Authorization: Bearer $SESSIOND_API_KEY" \
        -H 'Content-Type: application/json' -d "{\"user_id\":\"u1\",\"kind\":\"$1\"}" "$SD/v1/sessions"
}
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
peer_login() { # port -> "id=..."
    "${CURL[@]}" -o /dev/null -D - -X POST -H 'Content-Type: application/json' \
        -d '{"user_id":"u1"}' "http://127.0.0.1:$1/login" | sed -n 's/^set-cookie: \([^;]*\).*/\1/Ip'
}
check_200() { # description curl-args...
    local code
    code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "${@:2}")
    [[ $code == 200 ]] || { echo "$1: expected 200, got $code" >&2; exit 1; }
}

BENCH_COOKIE=$(sd_create cookie | json_field cookie)
export BENCH_COOKIE
[[ -n $BENCH_COOKIE ]] || { echo "could not create a sessiond cookie session" >&2; exit 1; }
check_200 "sessiond cookie validate" -X POST -H "Authorization: Bearer $SESSIOND_API_KEY" \
    -H 'Content-Type: application/json' -d "{\"cookie\":\"$BENCH_COOKIE\"}" "$SD/v1/sessions/validate"
PEER_COOKIE=$(peer_login "$PEER_PORT")
PEER_SAVE_COOKIE=$(peer_login "$PEER_SAVE_PORT")
[[ -n $PEER_COOKIE && -n $PEER_SAVE_COOKIE ]] || { echo "peer login gave no cookie" >&2; exit 1; }
check_200 "peer validate" -H "Cookie: $PEER_COOKIE" "http://127.0.0.1:$PEER_PORT/validate"
check_200 "peer-save validate" -H "Cookie: $PEER_SAVE_COOKIE" "http://127.0.0.1:$PEER_SAVE_PORT/validate"

new_access_token() {
    BENCH_ACCESS_TOKEN=$(sd_create tokens | json_field access_token)
    export BENCH_ACCESS_TOKEN
    [[ -n $BENCH_ACCESS_TOKEN ]] || { echo "could not create a sessiond token session" >&2; exit 1; }
    check_200 "sessiond access-token validate" -X POST -H "Authorization: Bearer $SESSIOND_API_KEY" \
        -H 'Content-Type: application/json' -d "{\"access_token\":\"$BENCH_ACCESS_TOKEN\"}" \
        "$SD/v1/sessions/validate"
}

# --- measurement ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
proc_cpu() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; } # utime+stime, ticks
machine_cpu() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $9 }' /proc/stat; }       # busy, steal

# "busy": something else used more than 10 % of the machine's CPU time during the run.
BUSY_LIMIT=$(awk -v n="$(nproc)" -v d="$DURATION" 'BEGIN { print 0.10 * n * d }')
WRK_OPTS=(-t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency)
echo "machine: $(nproc) CPUs, $(uname -srm); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "sessiond: $SESSIOND_BIN"
echo "peer:     $PEER_BIN"
echo "wrk ${WRK_OPTS[*]}; $ROUNDS rounds; started $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
INVALID=0
run_one() { # round scenario server-pid wrk-args...
    local round=$1 name=$2 pid=$3 out="$WORK/wrk/r$1-$2.txt"
    shift 3
    local s0 m0 m1 s1 w
    s0=$(proc_cpu "$pid"); m0=$(machine_cpu)
    # The subshell reaps wrk, so its cutime+cstime afterwards is wrk's CPU time.
    w=$(bash -c 'timeout "$1" wrk "${@:2}" >"$0" 2>&1; rc=$?; awk "{ sub(/^.*\\) /, \"\"); print \$14 + \$15 }" /proc/$$/stat; exit $rc' \
        "$out" "$((DURATION + 30))" "${WRK_OPTS[@]}" "$@") || {
        echo "wrk failed for $name (round $round):" >&2; cat "$out" >&2; exit 1; }
    s1=$(proc_cpu "$pid"); m1=$(machine_cpu)
    local status=ok
    if awk -v a="$m0" -v b="$m1" -v s="$((s1 - s0))" -v w="$w" -v lim="$BUSY_LIMIT" -v tck="$CLK_TCK" \
        'BEGIN { split(a, x, " "); split(b, y, " "); exit !((y[1] - x[1] - s - w) / tck > lim) }'; then
        status=busy
    fi
    if grep -Eq 'Non-2xx or 3xx responses|Socket errors' "$out"; then status=INVALID; INVALID=1; fi
    awk -v round="$round" -v name="$name" -v status="$status" -v tck="$CLK_TCK" \
        -v s="$((s1 - s0))" -v w="$w" -v m0="$m0" -v m1="$m1" '
        function ms(v) { # wrk prints 870.00us, 1.23ms, 1.02s, 1.00m
            if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
            if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v + 0 }
        /^    Latency/ { avg = ms($2); max = ms($4) }
        /^     50%/ { p50 = ms($2) } /^     99%/ { p99 = ms($2) }
        / requests in / { n = $1 }
        /^Requests\/sec:/ { rps = $2 }
        END {
            split(m0, a, " "); split(m1, b, " ")
            server = s / tck; wrkcpu = w / tck; busy = (b[1] - a[1]) / tck
            other = busy - server - wrkcpu; if (other < 0) other = 0
            printf "%d\t%s\t%.0f\t%.3f\t%.3f\t%.3f\t%.3f\t%.1f\t%.1f\t%.1f\t%.0f\t%s\n", round, name, rps,
                avg, p50, p99, max, server, wrkcpu, other, (n > 0 ? server * 1e6 / n : 0), status
        }' "$out" >>"$RESULTS"
    tail -1 "$RESULTS" | awk -F'\t' '{ printf "  round %s %-10s %8s req/s  p50 %6.3f ms  p99 %6.3f ms  max %7.2f ms  %s\n", $1, $2, $3, $5, $6, $7, $12 }'
}

scenario() { # round name
    case $2 in
        peer) run_one "$1" peer "$PEER_PID" -H "Cookie: $PEER_COOKIE" "http://127.0.0.1:$PEER_PORT/validate" ;;
        peer-save) run_one "$1" peer-save "$PEER_SAVE_PID" -H "Cookie: $PEER_SAVE_COOKIE" \
            "http://127.0.0.1:$PEER_SAVE_PORT/validate" ;;
        sd-cookie) run_one "$1" sd-cookie "$SESSIOND_PID" -s "$HERE/validate_cookie.lua" "$SD/v1/sessions/validate" ;;
        floor) run_one "$1" floor "$PEER_PID" "http://127.0.0.1:$PEER_PORT/floor" ;;
        sd-healthz) run_one "$1" sd-healthz "$SESSIOND_PID" "$SD/healthz" ;;
        sd-token) new_access_token; run_one "$1" sd-token "$SESSIOND_PID" -s "$HERE/validate_token.lua" "$SD/v1/sessions/validate" ;;
    esac
}

busy_pct() { # machine busy % over the next 2 s
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat); sleep 2
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        printf "%.0f", 100 * (y[1] - x[1]) / ((y[2] - x[2]) > 0 ? (y[2] - x[2]) : 1) }'
}
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) pct
    while :; do
        pct=$(busy_pct)
        ((pct < 15)) && return
        ((SECONDS >= deadline)) && { echo "  (machine still ${pct}% busy after ${QUIET_WAIT}s; running anyway)"; return; }
    done
}

ORDER=(floor sd-healthz peer sd-cookie peer-save sd-token)
for round in $(seq "$ROUNDS"); do
    if ((round % 2 == 1)); then order=("${ORDER[@]}"); else order=(sd-token peer-save sd-cookie peer sd-healthz floor); fi
    for name in "${order[@]}"; do
        sleep "$PAUSE"
        if ((QUIET_WAIT > 0)); then wait_quiet; fi
        scenario "$round" "$name"
    done
done

# --- report --------------------------------------------------------------------------------
echo
echo "finished $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | scenario | req/s | avg ms | p50 ms | p99 ms | max ms | server CPU s | wrk CPU s | other CPU s | server CPU µs/req | check |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
awk -F'\t' '{ printf "| %s | %s | %s | %.2f | %.2f | %.2f | %.1f | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }' "$RESULTS"
echo
echo "Ratios of req/s, sessiond / peer, same round:"
echo
echo "| round | sd-cookie / peer | sd-cookie / peer-save | sd-token / peer | sd-token / peer-save | sd-cookie / floor | sd-token / floor | peer / floor | sd-healthz / floor |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{ r[$1, $2] = $3; if ($1 > max) max = $1; if ($12 != "ok") mark[$1] = "*" }
    END { for (i = 1; i <= max; i++)
        printf "| %d%s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", i, mark[i], r[i, "sd-cookie"] / r[i, "peer"],
            r[i, "sd-cookie"] / r[i, "peer-save"], r[i, "sd-token"] / r[i, "peer"], r[i, "sd-token"] / r[i, "peer-save"],
            r[i, "sd-cookie"] / r[i, "floor"], r[i, "sd-token"] / r[i, "floor"], r[i, "peer"] / r[i, "floor"],
            r[i, "sd-healthz"] / r[i, "floor"] }' "$RESULTS"
echo
echo "Columns: server/wrk CPU s = CPU time the server process / wrk used during the run; other CPU s ="
echo "machine busy time minus both (anything else on the box, e.g. a compile; near 0 on a quiet box);"
echo "check \"busy\": other CPU above $BUSY_LIMIT s (10 % of the machine); \"*\" on a round: one of its runs was not \"ok\"."
if ((INVALID)); then
    echo "INVALID runs: a wrk run reported non-2xx responses or socket errors; see $WORK/wrk (kept)." >&2
    KEEP=1
    exit 1
fi
