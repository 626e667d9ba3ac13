#!/usr/bin/env bash
# Builds and runs the cargo-fuzz targets one after another.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600); TARGETs default to all of them. Needs
# cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain it sets
# RUSTC_BOOTSTRAP=1, because cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address). Run it under `nice -n 19` on a shared machine.
# Corpora go to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>
# (both ignored by git); logs to fuzz/logs/<target>.log.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(cookie_stage conn_feed_server conn_feed_client)
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

cargo fuzz build -O
mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
    log="fuzz/logs/$t.log"
    echo "== $t: ${secs}s (log: $log)"
    set +e
    cargo fuzz run -O "$t" -- -max_total_time="$secs" -max_len=2048 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    # The last status line: total executions, coverage, corpus.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    if [ $rc -ne 0 ] || grep -qE 'ERROR: libFuzzer|panicked at' "$log"; then
        echo "!! $t: crash (exit $rc)"
        grep -E -A5 'panicked at|ERROR: libFuzzer' "$log" | head -n 20
        ls fuzz/artifacts/"$t"/ 2>/dev/null || true
        status=1
    else
        echo "   $t: no crash"
    fi
done
exit $status
