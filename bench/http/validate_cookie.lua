-- wrk script: sessiond POST /v1/sessions/validate with a cookie session.
-- Needs SESSIOND_API_KEY (sent as "Authorization: Bearer ...") and BENCH_COOKIE (the
-- "cookie" value returned by POST /v1/sessions with {"kind":"cookie"}). run.sh sets both.
-- Usage: wrk -t1 -c32 -d15s --latency -s validate_cookie.lua http://127.0.0.1:18080/v1/sessions/validate
local key = assert(os.getenv("SESSIOND_API_KEY"), "SESSIOND_API_KEY is not set")
local cookie = assert(os.getenv("BENCH_COOKIE"), "BENCH_COOKIE is not set")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"cookie":"' .. cookie .. '"}'
