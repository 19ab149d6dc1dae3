-- wrk script: sessiond POST /v1/sessions/validate with an access token (EdDSA by default).
-- Needs SESSIOND_API_KEY (sent as "Authorization: Bearer ...") and BENCH_ACCESS_TOKEN (the
-- "tokens.access_token" returned by POST /v1/sessions with {"kind":"tokens"}; it expires after
-- tokens.access_ttl, 10 min by default, so run.sh mints a fresh one before every run).
-- Usage: wrk -t1 -c32 -d15s --latency -s validate_token.lua http://127.0.0.1:18080/v1/sessions/validate
local key = assert(os.getenv("SESSIOND_API_KEY"), "SESSIOND_API_KEY is not set")
local token = assert(os.getenv("BENCH_ACCESS_TOKEN"), "BENCH_ACCESS_TOKEN is not set")
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"access_token":"' .. token .. '"}'
