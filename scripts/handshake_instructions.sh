#!/usr/bin/env bash
# Instructions per full handshake on the server side, counted by callgrind, for
# every in-memory row of `handshake_bench --like-for-like` (bare OpenSSL and our
# engine). Counts are exact and do not depend on the machine's load, unlike the
# CPU times the bench prints.
#
#   scripts/handshake_instructions.sh [FILTER]
#
# FILTER selects rows by name (as `--only`). Each row runs twice under
# `valgrind --tool=callgrind --toggle-collect='*server_call*'` (only the work
# the bench times as the server's is counted), with 10 and with 60 counted
# handshakes; the difference divided by 50 is one handshake's instructions,
# without the warm-up, the clock calibration and the setup, which both runs
# share. Needs valgrind. About 10 s per row.
set -euo pipefail

cd "$(dirname "$0")/.."
cargo build --release --example handshake_bench
bin=target/release/examples/handshake_bench
filter="${1:-}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

collected() { # collected ROW COUNT
    valgrind --tool=callgrind --toggle-collect='*server_call*' \
        --callgrind-out-file="$out/cg" "$bin" --like-for-like --memory-only --no-pin \
        --count "$2" --repeat 1 --only "$1" 2>&1 >/dev/null |
        sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}

echo "| row (server side, in memory) | instructions per full handshake |"
echo "|---|---|"
"$bin" --like-for-like --memory-only --list --only "$filter" | while read -r row; do
    lo=$(collected "$row" 10)
    hi=$(collected "$row" 60)
    echo "| $row | $(((hi - lo) / 50)) |"
done
