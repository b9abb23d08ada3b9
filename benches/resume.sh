#!/usr/bin/env bash
# Interrupted transfers, measured (issue 12): bytes on the wire when a 1 GiB
# upload and download cut off at 30/60/90 % are run again; the time a re-run
# of `put -r` takes over 5,000 files when nothing changed, against one
# `sft ls -l` of each directory and a local `ls -lR`; and what an interrupted
# `put -r` re-run costs. Real server and client on loopback, release build.
#
#   benches/resume.sh                  SIZE_MIB=1024 FILES=5000
#   SFT=/path/to/sft benches/resume.sh use this binary
#
# The cut is made with SIGKILL once the server's temporary file (upload) or
# the client's .sft-part (download) holds the given share of the file, at a
# limited rate so that the point is hit; the re-run is unlimited.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/sft-lib.sh
SRV_WRAP=()
SFT_PROFILE=${SFT_PROFILE:-release}
sft_bin

SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-5000}
W=$(mktemp -d /tmp/sft-resume.XXXXXX)
trap 'stop_server KILL; rm -rf "$W"' EXIT
start_server "$W/srv" --fsync never
say "server $SRV_ADDR; $SFT"
random_file "$W/big.bin" $((SIZE_MIB << 20))
SIZE=$((SIZE_MIB << 20))

tmp_bytes() { find "$W/srv/root" -maxdepth 1 -name '.sft-tmp-*' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
part_bytes() { stat -c %s "$W/dl/.big.bin.sft-part" 2>/dev/null || echo 0; }
json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['$1'])"; }

# cut_at PCT WATCH CMD...: run CMD (rate-limited), SIGKILL it once WATCH >= PCT %
cut_at() {
    local pct=$1 watch=$2; shift 2
    "$@" >/dev/null 2>&1 &
    local pid=$! goal=$((SIZE * pct / 100))
    while (($($watch) < goal)); do
        kill -0 "$pid" 2>/dev/null || { say "the transfer ended before $pct %"; return 1; }
        sleep 0.01
    done
    kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
}

printf '\n%-10s %6s %14s %14s %10s %8s\n' direction cut "held (B)" "wire (B)" "of file" seconds
for pct in 30 60 90; do
    "$SFT" rm big.bin >/dev/null 2>&1 || true
    cut_at "$pct" tmp_bytes "$SFT" put "$W/big.bin" --limit-rate 400MB --retries 0
    sleep 0.3
    held=$(tmp_bytes)
    t0=$(date +%s.%N)
    out=$("$SFT" --json put "$W/big.bin")
    t1=$(date +%s.%N)
    wire=$(json_field wire <<<"$out"); resumed=$(json_field resumed <<<"$out")
    [[ $(sha "$W/srv/root/big.bin") == $(sha "$W/big.bin") ]] || die "upload not exact"
    printf '%-10s %5s%% %14s %14s %9.1f%% %8.2f\n' upload "$pct" "$resumed" "$wire" \
        "$(echo "100 * $wire / $SIZE" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
done
mkdir -p "$W/dl"
for pct in 30 60 90; do
    rm -f "$W/dl/big.bin" "$W/dl/.big.bin.sft-part"
    cut_at "$pct" part_bytes "$SFT" get big.bin -o "$W/dl/big.bin" --limit-rate 400MB --retries 0
    t0=$(date +%s.%N)
    out=$("$SFT" --json get big.bin -o "$W/dl/big.bin")
    t1=$(date +%s.%N)
    wire=$(json_field wire <<<"$out"); resumed=$(json_field resumed <<<"$out")
    [[ $(sha "$W/dl/big.bin") == $(sha "$W/big.bin") ]] || die "download not exact"
    printf '%-10s %5s%% %14s %14s %9.1f%% %8.2f\n' download "$pct" "$resumed" "$wire" \
        "$(echo "100 * $wire / $SIZE" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
done

# a tree of FILES small files (100 directories), uploaded once
T=$W/tree
for d in $(seq 0 99); do mkdir -p "$T/d$d"; done
python3 - "$T" "$FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(root, f"d{i % 100}", f"f{i}.txt"), "wb") as f:
        f.write(os.urandom(512 + (i * 37) % 8192))
EOF
"$SFT" -q put -r "$T" tree >/dev/null
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
rerun=$(secs "$SFT" -q put -r "$T" tree)
ls_remote=$(secs bash -c 'for d in $(seq 0 99); do "$0" ls -l "tree/tree/d$d" || exit 1; done' "$SFT")
ls_local=$(secs ls -lR "$T")
count=$(find "$W/srv/root/tree" -type f | wc -l)
printf '\nput -r of %s files, nothing changed: %.2f s (files on the server: %s)\n' "$FILES" "$rerun" "$count"
printf '  sft ls -l of its 100 directories, one command each: %.2f s; local ls -lR: %.3f s\n' "$ls_remote" "$ls_local"

# an interrupted put -r, run again: what it sends
"$SFT" rm -r -y tree >/dev/null
"$SFT" -q put -r "$T" tree --limit-rate 2MB >/dev/null 2>&1 &
pid=$!
sleep 2
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
before=$(find "$W/srv/root/tree" -type f ! -name '.sft-tmp-*' 2>/dev/null | wc -l)
t0=$(date +%s.%N)
"$SFT" --json put -r "$T" tree >"$W/rerun.json"
t1=$(date +%s.%N)
python3 - "$W/rerun.json" "$before" "$(echo "$t1 - $t0" | bc -l)" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r.get("outcome"), []).append(r)
wire = sum(r.get("wire", 0) for r in rows)
size = sum(r.get("size", 0) for r in rows)
print(f"\ninterrupted put -r after 2 s ({sys.argv[2]} files stored), run again: {float(sys.argv[3]):.2f} s;",
      ", ".join(f"{k}: {len(v)}" for k, v in sorted(by.items())),
      f"; {wire} bytes on the wire for {size} bytes of files")
EOF
count=$(find "$W/srv/root/tree" -type f ! -name '.sft-tmp-*' | wc -l)
dups=$(find "$W/srv/root/tree" -name '* (1)*' | wc -l)
printf 'files on the server: %s, numbered copies: %s\n' "$count" "$dups"
[[ $count == "$FILES" && $dups == 0 ]] || die "the re-run did not converge"
