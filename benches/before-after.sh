#!/usr/bin/env bash
# Two builds of sft side by side, interleaved: each repetition runs every case with both
# binaries (their order alternating), so both share the machine's drift. For a change that
# must not slow anything down (issue 11: "no case slower by more than 5 %").
#
#   benches/before-after.sh BEFORE_SFT AFTER_SFT     # release binaries, e.g. from two worktrees
#   REPS=5 benches/before-after.sh ...               # repetitions (default 3)
#
# Cases, all over loopback TLS with the server's root on tmpfs (the protocol's and the
# engine's cost, not the disk's), every transfer verified by sft itself (and the 1 GiB file
# again by sha256sum):
#   put-1g / get-1g      one 1 GiB random file (peers.sh's A.bin), --compress off
#   put-5000 / get-5000  5,000 small files (peers.sh's C/, 92 MB), put -r / get -r
#   put-32x16m           32 clients at once, each uploading 16 MiB; and the server's peak RSS
# Needs peers.sh's data in $BENCH_DIR/data (benches/many.sh or peers.sh makes it).
# Prints medians; writes $BENCH_DIR/results/before-after.tsv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BEFORE=$(realpath "${1:?usage: before-after.sh BEFORE_SFT AFTER_SFT}")
AFTER=$(realpath "${2:?usage: before-after.sh BEFORE_SFT AFTER_SFT}")
BENCH_DIR=${BENCH_DIR:-/srv/sft-bench}
REPS=${REPS:-3}
D=$BENCH_DIR/data
[[ -f $D/A.bin && -d $D/C ]] || { echo "no data in $D; run benches/many.sh first" >&2; exit 1; }
# shellcheck source=benches/sft-lib.sh
source "$here/sft-lib.sh"
SRV_WRAP=()
W=$(mktemp -d /dev/shm/sft-ba.XXXXXX)
OUT=$BENCH_DIR/results/before-after.tsv
mkdir -p "$BENCH_DIR/results"
cleanup() { stop_server; rm -rf "$W"; }
trap cleanup EXIT
printf 'rep\tbuild\tcase\tseconds\n' >"$OUT"
for i in $(seq 32); do head -c $((16 << 20)) /dev/urandom >"$W/m$i.bin"; done
WANT=$(sha256sum "$D/A.bin" | cut -d' ' -f1)

now() { date +%s.%N; }
record() { # rep build case start
    local t
    t=$(echo "$(now) - $4" | bc)
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$t" >>"$OUT"
    say "rep $1 $2 $3: $t s"
}

one_build() { # rep label binary
    local rep=$1 label=$2 t peak=0 p
    SFT=$3
    rm -rf "$W/srv" "$W/cli"
    mkdir -p "$W/cli"
    start_server "$W/srv" --fsync never --max-connections 64
    t=$(now); "$SFT" --compress off put "$D/A.bin" >/dev/null; record "$rep" "$label" put-1g "$t"
    t=$(now); "$SFT" --compress off get A.bin -o "$W/cli/A.bin" >/dev/null; record "$rep" "$label" get-1g "$t"
    [[ $(sha256sum "$W/cli/A.bin" | cut -d' ' -f1) == "$WANT" ]] || die "get-1g: digest differs"
    rm -f "$W/cli/A.bin" "$W/srv/root/A.bin"
    t=$(now); "$SFT" put -r "$D/C" >/dev/null; record "$rep" "$label" put-5000 "$t"
    t=$(now); "$SFT" get -r C -o "$W/cli" >/dev/null; record "$rep" "$label" get-5000 "$t"
    diff -rq "$D/C" "$W/cli/C" >/dev/null || die "get-5000: trees differ"
    rm -rf "$W/cli/C" "$W/srv/root/C"
    local pids=()
    t=$(now)
    for i in $(seq 32); do "$SFT" --compress off put "$W/m$i.bin" >/dev/null & pids+=($!); done
    while :; do
        p=$(rss_kib "$SRV_PID"); ((p > peak)) && peak=$p
        local running=0
        for q in "${pids[@]}"; do kill -0 "$q" 2>/dev/null && running=1; done
        ((running)) || break
        sleep 0.05
    done
    for q in "${pids[@]}"; do wait "$q" || die "a concurrent upload failed"; done
    record "$rep" "$label" put-32x16m "$t"
    printf '%s\t%s\t%s\t%s\n' "$rep" "$label" peak-rss-mib-32x16m "$((peak / 1024))" >>"$OUT"
    stop_server
}

for rep in $(seq "$REPS"); do
    if ((rep % 2)); then
        one_build "$rep" before "$BEFORE"; one_build "$rep" after "$AFTER"
    else
        one_build "$rep" after "$AFTER"; one_build "$rep" before "$BEFORE"
    fi
done

python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cases = []
for r in rows:
    if r["case"] not in cases:
        cases.append(r["case"])
print(f"{'case':<22}{'before':>10}{'after':>10}{'after/before':>14}   (medians of {len({r['rep'] for r in rows})})")
for c in cases:
    m = {b: statistics.median(float(r["seconds"]) for r in rows if r["case"] == c and r["build"] == b)
         for b in ("before", "after")}
    print(f"{c:<22}{m['before']:>10.2f}{m['after']:>10.2f}{m['after'] / m['before']:>14.3f}")
EOF
