#!/usr/bin/env bash
# Download speed through a share link (curl, HTTP/2 and HTTP/1.1) against
# `sft get` and against nginx serving the same file over TLS 1.3, all on
# loopback; then the server's memory with 100 concurrent curl downloads.
# Usage: scripts/bench_share.sh [SIZE_MiB (default 1024)] [RUNS (default 3)]
# Needs a release build (cargo build --release), curl, and nginx for its row.
set -euo pipefail
cd "$(dirname "$0")/.."
SFT=${SFT:-${CARGO_TARGET_DIR:-target}/release/sft}
MIB=${1:-1024}
RUNS=${2:-3}
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/root" "$T/state" "$T/out"
head -c $((MIB << 20)) /dev/urandom > "$T/root/data.bin"
SUM=$(sha256sum "$T/root/data.bin" | cut -d' ' -f1)
"$SFT" serve --root "$T/root" --state-dir "$T/state" --listen 127.0.0.1:0 --fsync never >"$T/serve.out" 2>"$T/serve.log" &
SPID=$!; PIDS+=($SPID)
for _ in $(seq 50); do grep -q '^token:' "$T/serve.out" 2>/dev/null && break; sleep 0.1; done
export SFT_SERVER=$(head -1 "$T/serve.out" | sed 's/listening on //')
export SFT_PIN=$(awk '/certificate sha256/ {print $3}' "$T/serve.out")
export SFT_TOKEN=$(awk '/^token:/ {print $2}' "$T/serve.out")
URL=$("$SFT" share data.bin | tail -1)
CERT="$T/state/cert.pem"; KEY="$T/state/key.pem"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { # command... ; prints MB/s of one run (file written to $T/out/f)
  local s e; rm -f "$T/out/f"; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
  [ "$(sha256sum "$T/out/f" | cut -d' ' -f1)" = "$SUM" ] || { echo "digest mismatch: $*" >&2; exit 1; }
  echo "$MIB $s $e" | awk '{printf "%.0f\n", $1*1.048576/($3-$2)}'
}
row() { local name=$1; shift; local r=(); for _ in $(seq "$RUNS"); do r+=("$(rate "$@")"); done
  printf '%-28s %6s MB/s   (runs: %s)\n' "$name" "$(printf '%s\n' "${r[@]}" | median)" "${r[*]}"; }

echo "file: $MIB MiB random, loopback, $RUNS runs, median"
row "share link, curl --http2" curl -s --cacert "$CERT" --http2 -o "$T/out/f" "$URL"
row "share link, curl --http1.1" curl -s --cacert "$CERT" --http1.1 -o "$T/out/f" "$URL"
row "sft get" "$SFT" get data.bin -o "$T/out/f" --force
if command -v nginx >/dev/null; then
  mkdir -p "$T/nginx"
  cat >"$T/nginx/nginx.conf" <<NGX
daemon off; user root; worker_processes 1; pid $T/nginx/pid; error_log $T/nginx/error.log warn;
events { worker_connections 1024; }
http { access_log off; sendfile on; client_body_temp_path $T/nginx;
  server { listen 127.0.0.1:18443 ssl http2; ssl_protocols TLSv1.3;
    ssl_certificate $CERT; ssl_certificate_key $KEY; root $T/root; } }
NGX
  nginx -c "$T/nginx/nginx.conf" & PIDS+=($!); sleep 0.5
  row "nginx, curl --http2" curl -s --cacert "$CERT" --http2 -o "$T/out/f" https://127.0.0.1:18443/data.bin
  row "nginx, curl --http1.1" curl -s --cacert "$CERT" --http1.1 -o "$T/out/f" https://127.0.0.1:18443/data.bin
fi

# memory: 100 concurrent downloads, each held at 4 MB/s so they overlap
rss() { awk '/VmRSS/ {print $2}' /proc/$SPID/status; }
echo "server RSS before: $(rss) KiB"
CPIDS=()
for i in $(seq 100); do
  curl -s --cacert "$CERT" --limit-rate 4M --max-time 120 -o /dev/null "$URL" & CPIDS+=($!)
done
peak=0
for _ in $(seq 20); do sleep 0.25; r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; done
echo "server RSS with 100 concurrent curl downloads: peak $peak KiB over 5 s; VmHWM $(awk '/VmHWM/ {print $2}' /proc/$SPID/status) KiB"
for p in "${CPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${CPIDS[@]}" 2>/dev/null || true
