#!/usr/bin/env bash
# Build and run every fuzz target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]   short form (default 20 s each; CI)
#   fuzz/run.sh long [RUNS]            long form: RUNS executions per target
#                                      (default 10,000,000)
#   FUZZ_TARGETS="names zstd_block" fuzz/run.sh ...   only these targets
#
# Prints one line per target: executions, time, executions per second.
# Exits non-zero if any target finds a crash (its input is kept under
# fuzz/artifacts/TARGET/; make it a regression test in the main crate).
#
# Works on a stable toolchain: cargo-fuzz needs -Z flags, which
# RUSTC_BOOTSTRAP=1 allows. Sanitizer: none by default (sft forbids unsafe
# code; the C in zstd is the only unchecked code, and ASan halves the
# executions per second); FUZZ_SANITIZER=address to use ASan.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
# its own target directory: the fuzz build (instrumented, release) shares
# nothing with the main one; kept across runs
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/sft-fuzz-target}
SAN=${FUZZ_SANITIZER:-none}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

mode=time
secs=20
runs=10000000
case "${1:-}" in
    long) mode=runs; runs=${2:-10000000} ;;
    "") ;;
    *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] | $0 long [RUNS]" >&2; exit 2 ;;
    *) secs=$1 ;;
esac

targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
start=$(date +%s)
blog=$(mktemp)
if ! nice cargo fuzz build --sanitizer "$SAN" --target-dir "$CARGO_TARGET_DIR" >"$blog" 2>&1; then
    tail -30 "$blog" >&2
    echo "fuzz build failed" >&2
    exit 1
fi
rm -f "$blog"
echo "fuzz build: $(( $(date +%s) - start )) s"

fail=0
summary=()
for t in $targets; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log=$(mktemp)
    if [ "$mode" = time ]; then
        limit=(-max_total_time="$secs")
    else
        limit=(-runs="$runs")
    fi
    t0=$(date +%s)
    if cargo fuzz run --sanitizer "$SAN" --target-dir "$CARGO_TARGET_DIR" "$t" "fuzz/corpus/$t" -- \
        "${limit[@]}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        fail=1
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
    fi
    dt=$(( $(date +%s) - t0 ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    execs=${execs:-0}
    rate=$(( execs / (dt > 0 ? dt : 1) ))
    line=$(printf '%-22s %-6s %12s execs %6s s %9s/s' "$t" "$status" "$execs" "$dt" "$rate")
    echo "$line"
    summary+=("$line")
    rm -f "$log"
done
if [ "$mode" = time ]; then what="${secs} s per target"; else what="${runs} runs per target"; fi
echo "--- fuzz summary ($what, sanitizer $SAN)"
printf '%s\n' "${summary[@]}"
exit $fail
