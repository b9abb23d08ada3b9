# Shared by benches/soak.sh, benches/faults.sh and benches/tls-audit.sh
# (sourced, not run): find or build the sft binary, start a real `sft serve`
# on 127.0.0.1 with certificates made by `sft cert`, stop it by PID, and
# check the invariants of THREATS.md on its root.
#
#   SFT=/path/to/sft   use this binary (default: cargo build --locked, debug;
#                      SFT_PROFILE=release for a release build)
# shellcheck shell=bash

SFT_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SFT_LIB_DIR/.." && pwd)

say() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "FATAL: $*"; exit 2; }

FAILS=0
CHECKS=0
# ok CONDITION-TEXT: a passed check; bad: a violated invariant (counted, the
# script exits non-zero at the end)
ok() { CHECKS=$((CHECKS + 1)); say "ok    $*"; }
bad() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); say "FAIL  $*"; }
check() { # check "what" cmd...
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

sft_bin() {
    if [[ -n ${SFT:-} ]]; then
        [[ -x $SFT ]] || die "SFT=$SFT is not an executable"
        return
    fi
    local profile=${SFT_PROFILE:-debug} flag=()
    [[ $profile == release ]] && flag=(--release)
    (cd "$REPO" && cargo build --locked -q "${flag[@]}" --bin sft) || die "cargo build failed"
    local td=${CARGO_TARGET_DIR:-$REPO/target}
    SFT=$td/$profile/sft
    [[ -x $SFT ]] || die "no binary at $SFT"
}

# make_pki DIR: a CA and a server certificate for localhost/127.0.0.1, made by sft itself
make_pki() {
    local d=$1
    mkdir -p "$d"
    "$SFT" cert ca --out "$d" >/dev/null 2>&1 || die "sft cert ca failed"
    # a validity of our choosing where sft offers one (SFT_CERT_DAYS; Mozilla's
    # "modern" profile, which sslyze checks, allows at most 90 days)
    local days=()
    if [[ -n ${SFT_CERT_DAYS:-} ]] && "$SFT" cert server --help 2>/dev/null | grep -q -- '--days'; then
        days=(--days "$SFT_CERT_DAYS")
    fi
    # where the CA's revocation list (DIR/ca.crl, from `sft cert ca`) would be
    # published: auditors want certificates to name it
    local crl=()
    if "$SFT" cert server --help 2>/dev/null | grep -q -- '--crl-url'; then
        crl=(--crl-url "${SFT_CRL_URL:-http://localhost/ca.crl}")
    fi
    "$SFT" cert server --ca "$d" --name localhost --ip 127.0.0.1 "${days[@]}" "${crl[@]}" >/dev/null 2>&1 ||
        die "sft cert server failed"
}

# start_server DIR [serve flags...]: a server on 127.0.0.1:0 with root DIR/root,
# certificates in DIR/pki, token in DIR/token. Sets SRV_PID (the sft
# process, even under a wrapper), SRV_WRAP_PID (the wrapper's, if any),
# SRV_ADDR, SRV_LOG, and exports SFT_SERVER, SFT_CA, SFT_TOKEN for clients.
# SRV_WRAP=(prlimit --nofile=256 --) or (strace ... --) runs it under a wrapper.
start_server() {
    local d=$1; shift
    mkdir -p "$d/root" "$d/state"
    [[ -f $d/pki/server.pem ]] || make_pki "$d/pki"
    if [[ ! -f $d/token ]]; then
        (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/token")
    fi
    SRV_LOG=$d/server.log
    : >"$d/stdout"
    "${SRV_WRAP[@]}" "$SFT" serve --root "$d/root" --state-dir "$d/state" \
        --listen 127.0.0.1:0 --cert "$d/pki/server.pem" --key "$d/pki/server.key" \
        --token-file "$d/token" "$@" >"$d/stdout" 2>>"$SRV_LOG" </dev/null &
    local pid=$!
    SRV_WRAP_PID=
    SRV_PID=$pid
    local i
    for i in $(seq 300); do
        SRV_ADDR=$(sed -n 's/^listening on //p' "$d/stdout" | head -1)
        [[ -n $SRV_ADDR ]] && break
        kill -0 "$pid" 2>/dev/null || { tail -5 "$SRV_LOG" >&2; die "sft serve exited at start"; }
        sleep 0.1
    done
    [[ -n $SRV_ADDR ]] || { kill -KILL "$pid"; die "sft serve printed no address in 30 s"; }
    if ((${#SRV_WRAP[@]})); then
        # the wrapper's child (prlimit execs, strace forks)
        local child
        child=$(pgrep -P "$pid" | head -1 || true)
        if [[ -n $child ]]; then SRV_WRAP_PID=$pid; SRV_PID=$child; fi
    fi
    export SFT_SERVER=$SRV_ADDR SFT_CA=$d/pki/ca.pem SFT_TOKEN
    SFT_TOKEN=$(cat "$d/token")
    unset SFT_PIN
}

# stop_server [SIG]: SIGTERM (default) and wait up to 40 s, then SIGKILL.
stop_server() {
    local sig=${1:-TERM} p
    [[ -n ${SRV_PID:-} ]] || return 0
    kill "-$sig" "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 400); do
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SRV_PID" 2>/dev/null || true
    for p in $SRV_PID $SRV_WRAP_PID; do wait "$p" 2>/dev/null || true; done
    SRV_PID= SRV_WRAP_PID=
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds_of() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

# a file of N bytes of random data at PATH
random_file() { head -c "$2" /dev/urandom >"$1"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# used_by_server: the server's total of used bytes, from `sft df --json`
used_by_server() {
    "$SFT" df --json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    o = json.loads(line)
    if "used" in o and o.get("name") is None:
        print(o["used"]); break'
}

# bytes_on_disk ROOT: apparent size of the regular files a client can see
# (reserved .sft-tmp-* names excluded: they are not files of anyone's)
bytes_on_disk() {
    find "$1" -type f ! -name '.sft-tmp-*' -printf '%s\n' | awk '{s+=$1} END {print s+0}'
}

# leftovers ROOT: reserved temporary names on disk
leftovers() { find "$1" -name '.sft-tmp-*' | wc -l; }

# still_serves TAG: a fresh client can put, get and verify a file
still_serves() {
    local tmp; tmp=$(mktemp -d)
    random_file "$tmp/probe" 100000
    local want; want=$(sha "$tmp/probe")
    # letters, digits and '-' only ("host:name" means another server)
    local tag=${1//[^a-zA-Z0-9-]/-}
    if timeout 60 "$SFT" -q put "$tmp/probe" --as "probe-$tag-$RANDOM" >"$tmp/out" 2>&1; then
        local name; name=$(awk '{print $2}' "$tmp/out" | tail -1)
        if timeout 60 "$SFT" -q get "$name" -o "$tmp/back" --sha256 "$want" >/dev/null 2>&1 &&
            [[ $(sha "$tmp/back") == "$want" ]]; then
            rm -rf "$tmp"; return 0
        fi
    fi
    cat "$tmp/out" >&2
    rm -rf "$tmp"
    return 1
}

# invariants ROOT MANIFEST [MAYBE]: THREATS.md's invariants after a fault.
#  MANIFEST: "sha256  name" of every acknowledged upload (exit 0 of sft put)
#  MAYBE:    "sha256  name" of uploads whose outcome is unknown (killed,
#            refused): each may be absent, or present whole, never partial.
# Checks: the server answers; every acknowledged file is listed with its
# digest and its bytes on disk match; every listed file is acknowledged or a
# whole copy of a maybe; no reserved name is listed; ledger = disk.
invariants() {
    local root=$1 manifest=$2 maybe=${3:-/dev/null} tag=${4:-}
    local sums; sums=$(mktemp)
    check "$tag server still serves put+get" still_serves "${tag// /-}"
    if ! timeout 60 "$SFT" -q sums >"$sums" 2>"$sums.err"; then
        bad "$tag server lists its files ($(head -1 "$sums.err"))"
    fi
    grep -v '  probe-' "$sums" >"$sums.f" || true
    local missing=0 wrong=0 stray=0 partial=0
    while read -r d n; do
        [[ -n $n ]] || continue
        if ! grep -qxF "$d  $n" "$sums.f"; then missing=$((missing + 1)); say "  acknowledged but not listed whole: $n"; continue; fi
        [[ $(sha "$root/$n") == "$d" ]] || { wrong=$((wrong + 1)); say "  bytes on disk differ: $n"; }
    done <"$manifest"
    while read -r d n; do
        [[ -n $n ]] || continue
        grep -qxF "$d  $n" "$manifest" && continue
        if grep -q "^$d " "$maybe" 2>/dev/null || grep -q "^$d " "$manifest"; then continue; fi
        if [[ $n == .sft-tmp-* || $n == */.sft-tmp-* ]]; then stray=$((stray + 1)); else partial=$((partial + 1)); fi
        say "  listed but neither acknowledged nor a whole copy of an upload: $n"
    done <"$sums.f"
    [[ $missing == 0 && $wrong == 0 ]] && ok "$tag acknowledged uploads intact ($(grep -c . "$manifest" || true) files)" ||
        bad "$tag acknowledged uploads intact: $missing missing, $wrong corrupted"
    [[ $partial == 0 && $stray == 0 ]] && ok "$tag nothing half-visible" ||
        bad "$tag nothing half-visible: $partial unexplained files, $stray reserved names listed"
    local used disk
    used=$(used_by_server || true); disk=$(bytes_on_disk "$root")
    [[ -n $used && $used == "$disk" ]] && ok "$tag ledger = disk ($disk B)" ||
        bad "$tag ledger = disk: sft df says ${used:-?} B used, the root holds $disk B"
    rm -f "$sums" "$sums.err" "$sums.f"
}

# after a restart the reserved names left by a crash must be gone
no_leftovers() {
    local n; n=$(leftovers "$1")
    [[ $n == 0 ]] && ok "$2 no reserved temporary names on disk" || bad "$2 $n reserved temporary names left on disk"
}

finish() {
    say "$CHECKS checks, $FAILS failed"
    [[ $FAILS == 0 ]]
}
