#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo fuzz) of the request path.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (tests/fuzz/fuzz_targets): body_parser (parse and validate, all or nothing,
# numbers kept as sent), decompress (gzip/zstd within the limit), request_path (raw bytes
# on a connection, through hyper, the head checks, body limits, parsing and admission).
# Each starts from the committed seed corpus in tests/fuzz/corpus/TARGET and works in a
# scratch copy, so a run never changes what is committed. Crashes land in
# tests/fuzz/artifacts/TARGET. Prints one line per target: executions, and whether it
# found anything. The machine's toolchain is stable: RUSTC_BOOTSTRAP lets cargo fuzz pass
# the coverage flags libFuzzer needs, on this one build. No AddressSanitizer: librdkafka's
# C configure step (a dependency of the product crate) fails under its flags; the code under
# test is safe Rust but for a few bounds-checked SIMD loads, and debug assertions are on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(body_parser decompress request_path)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in "${targets[@]}"; do
  cp -r "tests/fuzz/corpus/$target" "$work/$target"
  log="$work/$target.log"
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --fuzz-dir tests/fuzz "$target" "$work/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
  if ((status == 0)); then
    echo "$target: ${runs:-?} executions in ${seconds}s, nothing found"
  else
    echo "$target: ${runs:-?} executions, FAILED (exit $status); see below"
    tail -40 "$log"
  fi
done
