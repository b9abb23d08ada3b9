#!/usr/bin/env bash
# benches/s3.sh: sft onto Ceph RGW (issue 15), beside object_store alone.
#   - put/get throughput of one file (SIZE_MB, default 512) through `sft serve --store s3://`
#     and through object_store alone (examples/s3_alone.rs), same engine, same file;
#   - requests per committed small file: N (default 200) files of 1 KiB with `sft put -r`,
#     counted from radosgw's access log, by kind of key;
#   - the server's peak RSS during the big put and get.
# Uses the Ceph of tests/s3/ceph.sh (CEPH_DIR, default /tmp/sft-ceph, started if not running)
# and the sft binary and object_store example of the test build (PROFILE=release for both
# optimised; SFT_BIN to choose another sft). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
CEPH_DIR=${CEPH_DIR:-/tmp/sft-ceph}; PORT=${PORT:-7480}; SIZE_MB=${SIZE_MB:-512}; N=${N:-200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
bash tests/s3/ceph.sh install "$CEPH_DIR" >/dev/null
timeout 180 bash tests/s3/ceph.sh start "$CEPH_DIR" "$PORT" >/dev/null
eval "$(bash tests/s3/ceph.sh env "$CEPH_DIR" "$PORT")"
PROFILE=${PROFILE:-debug}
if [[ $PROFILE == release ]]; then cargo build -q --release --bin sft --example s3_alone
else cargo build -q --bin sft --example s3_alone; fi
SFT=${SFT_BIN:-$CARGO_TARGET_DIR/$PROFILE/sft}; ALONE=$CARGO_TARGET_DIR/$PROFILE/examples/s3_alone
W=$(mktemp -d); trap 'kill "$SRV" 2>/dev/null || true; rm -rf "$W"' EXIT
B=bench-$$
python3 tests/s3/s3util.py "$S3_ENDPOINT" mkbucket "$B"
head -c $((SIZE_MB << 20)) /dev/urandom > "$W/big"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" -days 2 2>/dev/null
echo bench-token-0123456789abcdef > "$W/tokens"; chmod 600 "$W/tokens" "$W/key.pem"
mkdir "$W/scratch"
"$SFT" serve --listen 127.0.0.1:0 --root "$W/scratch" --cert "$W/cert.pem" --key "$W/key.pem" \
  --token-file "$W/tokens" --store "s3://$B" --s3-endpoint "$S3_ENDPOINT" --s3-allow-http \
  > "$W/out" 2> "$W/log" & SRV=$!
for _ in $(seq 100); do grep -q "listening on" "$W/out" 2>/dev/null && break; sleep 0.1; done
export SFT_SERVER=$(sed -n 's/^listening on //p' "$W/out" | head -1)
export SFT_PIN=$(openssl x509 -in "$W/cert.pem" -outform DER | sha256sum | cut -d' ' -f1)
export SFT_TOKEN=bench-token-0123456789abcdef
rss() { awk '/VmHWM/{print $2/1024 " MiB"}' "/proc/$SRV/status"; }

t0=$(date +%s.%N); "$SFT" put --compress off "$W/big" --as big >/dev/null; t1=$(date +%s.%N)
"$SFT" get --compress off big -o "$W/big.copy" >/dev/null; t2=$(date +%s.%N)
cmp "$W/big" "$W/big.copy"
"$SFT" rm big >/dev/null   # room in Ceph's memstore for the same file through object_store
echo "sft onto Ceph: put $(echo "$SIZE_MB*1.048576/($t1-$t0)" | bc -l | cut -d. -f1) MB/s ($(echo "$t1-$t0" | bc -l | cut -c1-5) s), get $(echo "$SIZE_MB*1.048576/($t2-$t1)" | bc -l | cut -d. -f1) MB/s ($(echo "$t2-$t1" | bc -l | cut -c1-5) s), ${SIZE_MB} MiB; server peak RSS $(rss)"
"$ALONE" "$S3_ENDPOINT" "$B" "$W/big"
rm -f "$W/big" "$W/big.copy"

mkdir "$W/small"; for i in $(seq "$N"); do head -c 1024 /dev/urandom > "$W/small/f$i"; done
LOG=$CEPH_DIR/run/client.rgw.a.log; before=$(wc -l < "$LOG")
t0=$(date +%s.%N); "$SFT" put -r "$W/small" --to small >/dev/null; t1=$(date +%s.%N)
sleep 1
tail -n +"$((before + 1))" "$LOG" | grep "beast:.*/$B/" | grep object_store \
  | sed -E 's/.*"(PUT|GET|HEAD|DELETE|POST) \/[^/]+\/([a-z]+).*/\1 \2/' | sort | uniq -c > "$W/reqs"
total=$(awk '{s+=$1} END {print s}' "$W/reqs")
echo "$N small files (1 KiB) with put -r: $(echo "$t1-$t0" | bc -l | cut -c1-5) s, $total requests to the store, $(echo "$total/$N" | bc -l | cut -c1-4) per file:"
sed 's/^/   /' "$W/reqs"
