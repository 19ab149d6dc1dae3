#!/usr/bin/env bash
# Runs sessiond's fuzz targets (libFuzzer through cargo-fuzz), each for SECONDS (default 600).
#   fuzz/run.sh                 every target, 10 minutes each
#   SECONDS_PER_TARGET=60 fuzz/run.sh jws    one target, one minute
# New inputs go to a scratch corpus (fuzz/scratch/<target>, not committed); the committed seed
# corpus (fuzz/corpus/<target>) is read only. Crashes land in fuzz/artifacts/<target>/.
# Uses a nightly toolchain when one is installed, else stable with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
secs=${SECONDS_PER_TARGET:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cookie jws jwks config headers)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
for t in "${targets[@]}"; do
  mkdir -p "scratch/$t"
  echo "==> $t for ${secs}s"
  "${fuzz[@]}" run "$t" "scratch/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
    | tee "scratch/$t.log" | grep -E '^(#[0-9]+ +DONE|stat::|==|SUMMARY|Done)' || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then echo "!! $t: crashes in fuzz/artifacts/$t"; fi
done
