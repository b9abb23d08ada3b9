#!/usr/bin/env bash
# Server memory, measured from outside: peak RSS (VmHWM) of a release
# `sft serve` during N concurrent large uploads, then N concurrent downloads,
# then N of each at once, and the resident cost of idle authenticated
# sessions and of idle strangers. Says whether every peak stayed within
# LIMIT_MB (issue 11: 64 MiB with 32 concurrent large uploads and downloads).
#
#   benches/memory.sh                 # N=32 transfers of 64 MiB, 1000 idle
#   N=32 SIZE_MB=200 IDLE=1000 benches/memory.sh
#   SERVE_ARGS="--memory-budget 16MiB" benches/memory.sh
#
# Needs: a release build (cargo build --release), python3. Runs the server on
# 127.0.0.1 with its root on /dev/shm, stops it by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-32}
SIZE_MB=${SIZE_MB:-64}
IDLE=${IDLE:-1000}
LIMIT_MB=${LIMIT_MB:-64}
BIN=${SFT:-${CARGO_TARGET_DIR:-target}/release/sft}
[ -x "$BIN" ] || { echo "no release binary at $BIN: cargo build --release" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d /dev/shm/sft-mem.XXXXXX)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$token" >"$work/tokens"
chmod 600 "$work/tokens"
"$BIN" serve --root "$work/root" --listen 127.0.0.1:0 --token-file "$work/tokens" \
    --state-dir "$work/state" --max-connections $((IDLE + 2 * N + 16)) --fsync never \
    ${SERVE_ARGS:-} >"$work/out" 2>"$work/log" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/out" 2>/dev/null && break; sleep 0.1; done
addr=$(awk '/^listening on/ {print $3; exit}' "$work/out")
pin=$(grep -o '[0-9a-f]\{64\}' "$work/out" | head -1)
export SFT_SERVER=$addr SFT_PIN=$pin SFT_TOKEN=$token

rss() { awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

head -c $((SIZE_MB << 20)) /dev/urandom >"$work/big.bin"
"$BIN" put "$work/big.bin" --as warm.bin >/dev/null
"$BIN" rm warm.bin >/dev/null
base=$(rss)
echo "server after warm-up: $(mib "$base") resident"

# the peak of one phase alone: writing 5 to clear_refs resets VmHWM
# (Linux 4.0+); where that fails the peaks are cumulative, which only errs
# on the high side
reset_peak() { echo 5 >"/proc/$server_pid/clear_refs" 2>/dev/null || true; }
failed=0
check() { # label kib
    if [ "$2" -le $((LIMIT_MB * 1024)) ]; then ok="within"; else ok="OVER"; failed=1; fi
    echo "peak during $1: $(mib "$2") ($ok $LIMIT_MB MiB)"
}
run_all() { # what: wait for every client, fail if one did
    local bad=0
    for p in "$@"; do wait "$p" || bad=1; done
    [ "$bad" = 0 ] || { echo "a transfer failed" >&2; exit 1; }
}

# every upload has content of its own: the same content would be stored
# from what the server already holds (CLONE), with no data sent
stamp() { # round: make src-1..N differ from each other and from earlier rounds
    for i in $(seq "$N"); do
        [ -f "$work/src-$i.bin" ] || cp "$work/big.bin" "$work/src-$i.bin"
        printf 'round %s upload %s\n' "$1" "$i" | dd of="$work/src-$i.bin" conv=notrunc status=none
    done
}
stamp 1
reset_peak
pids=()
for i in $(seq "$N"); do
    "$BIN" put "$work/src-$i.bin" --as "up-$i.bin" --compress off >/dev/null &
    pids+=($!)
done
run_all "${pids[@]}"
check "$N concurrent uploads of $SIZE_MB MiB" "$(hwm)"

reset_peak
pids=()
for i in $(seq "$N"); do
    "$BIN" get "up-$i.bin" -o - --compress off >/dev/null &
    pids+=($!)
done
run_all "${pids[@]}"
check "$N concurrent downloads of $SIZE_MB MiB" "$(hwm)"

stamp 2
reset_peak
pids=()
for i in $(seq "$N"); do
    "$BIN" put "$work/src-$i.bin" --as "again-$i.bin" --compress off >/dev/null &
    pids+=($!)
    "$BIN" get "up-$i.bin" -o - --compress off >/dev/null &
    pids+=($!)
done
run_all "${pids[@]}"
check "$N concurrent uploads and $N downloads at once" "$(hwm)"
rm -f "$work"/root/up-*.bin "$work"/root/again-*.bin "$work"/src-*.bin
if [ "$failed" = 0 ]; then
    echo "memory: every peak within $LIMIT_MB MiB"
else
    echo "memory: some peak OVER $LIMIT_MB MiB"
fi

python3 - "$addr" "$token" "$IDLE" "$server_pid" <<'PYEOF'
import socket, ssl, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
token, n, pid = sys.argv[2].encode(), int(sys.argv[3]), sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["sft/1"])

def frame(ty, body):
    return bytes([ty]) + struct.pack(">I", len(body)) + body

def exact(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            sys.exit("the server closed a session")
        b += c
    return b

def read_frame(s):
    ty, ln = struct.unpack(">BI", exact(s, 5))
    return ty, exact(s, ln)

def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])

hello = frame(0x01, b"SFT1" + struct.pack(">HHI", 1, 1, 0))
auth = frame(0x03, b"\x01" + struct.pack(">H", len(token)) + token)
deadline = time.time() + 180

def measure(label, opener):
    before = rss()
    held = []
    dropped = 0
    for _ in range(n):
        try:
            held.append(opener())
        except OSError:
            dropped += 1  # the server dropped it to make room (strangers)
        if time.time() > deadline:
            sys.exit("timed out")
    time.sleep(1)
    after = rss()
    print(f"{label}: {n} opened ({dropped} refused during the handshake), server resident "
          f"{before} -> {after} KiB, {(after - before) / n:.1f} KiB per connection opened", flush=True)
    for h in held:
        h.close()
    time.sleep(2)

def session():
    s = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname="localhost")
    s.sendall(hello + auth)
    assert read_frame(s)[0] == 0x02, "WELCOME"
    ty, body = read_frame(s)
    assert ty == 0x04, f"AUTH_OK, got {ty:#x} {body[:80]!r}"
    return s

def tls_only():
    return ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname="localhost")

measure("idle authenticated sessions", session)
measure("raw TCP strangers (nothing sent)", lambda: socket.create_connection((host, int(port))))
measure("TLS strangers (handshake, then nothing)", tls_only)
PYEOF
