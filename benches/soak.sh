#!/usr/bin/env bash
# Load and soak against a real `sft serve` on 127.0.0.1 (issue 13, THREATS.md
# "Load"). Each part ends with its invariants checked; the script exits
# non-zero if any is violated.
#
#   benches/soak.sh                 short form (CI): floods of 1,000, slow
#                                   peers, a descriptor limit, a 30 s soak of
#                                   20 clients
#   SOAK_LONG=1 benches/soak.sh     long form: the soak is 100 clients for
#                                   180 s (SOAK_CLIENTS, SOAK_SECONDS override)
#   SOAK_PARTS="flood slow nofile soak"   a subset
#
# Parts:
#   flood   1,000 raw TCP connections that send nothing, then separately
#           1,000 that complete TLS and send nothing (spread over 16 source
#           addresses), held while a real client does a put and a get of
#           1 MB: each must succeed, verified, in under 2 s (FLOOD_TARGET_S)
#   slow    --max-connections 4: four `sft get` clients SIGSTOPped mid-
#           download, then four `sft put` clients SIGSTOPped mid-upload;
#           each time a fifth client must get through once --data-timeout
#           has passed, and nothing half-uploaded is visible
#   nofile  the server under `prlimit --nofile=64` with 400 idle
#           connections: it stays up, logs accept failures at a bounded
#           rate, and serves a client promptly once the flood ends
#   soak    N mixed clients (put, get, ls, rm, df) for S seconds, every
#           transfer verified, server RSS sampled every 3 s (printed; must
#           be flat after warm-up), descriptors back to baseline, and at
#           the end `sft df` = bytes on disk and every file accounted for
set -euo pipefail
# shellcheck source=benches/sft-lib.sh
source "$(dirname "$0")/sft-lib.sh"
HERE=$SFT_LIB_DIR
PARTS=${SOAK_PARTS:-flood slow nofile soak}
part() { [[ " $PARTS " == *" $1 "* ]]; }
if [[ -n ${SOAK_LONG:-} ]]; then
    CLIENTS=${SOAK_CLIENTS:-100}; SECONDS_SOAK=${SOAK_SECONDS:-180}
else
    CLIENTS=${SOAK_CLIENTS:-20}; SECONDS_SOAK=${SOAK_SECONDS:-30}
fi
FLOOD=${FLOOD_COUNT:-1000}
TARGET=${FLOOD_TARGET_S:-2}

sft_bin
WORK=$(mktemp -d /tmp/sft-soak.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
    stop_server KILL
    [[ -n ${SOAK_KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
SRV_WRAP=()

# timed_put_get TAG: put then get a 1 MB file; prints "put_s get_s" and
# fails unless both succeed, verified
timed_put_get() {
    local f=$WORK/probe-$1 t0 t1 t2 name want
    random_file "$f" 1000000
    want=$(sha "$f")
    t0=$(date +%s.%N)
    if ! timeout 60 "$SFT" -q put "$f" --as "$1" >"$f.out" 2>"$f.err"; then
        say "  put failed: $(head -1 "$f.err")"; echo "fail fail"; return 1
    fi
    t1=$(date +%s.%N)
    name=$(awk '{$1=""; sub(/^ /, ""); print}' "$f.out" | tail -1)
    if ! timeout 60 "$SFT" -q get "$name" -o "$f.back" --sha256 "$want" >/dev/null 2>"$f.err"; then
        say "  get failed: $(head -1 "$f.err")"; echo "$(dt "$t0" "$t1") fail"; return 1
    fi
    t2=$(date +%s.%N)
    [[ $(sha "$f.back") == "$want" ]] || { echo "verify fail"; return 1; }
    echo "$(dt "$t0" "$t1") $(dt "$t1" "$t2")"
}

dt() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
under() { awk -v x="$1" -v t="$2" 'BEGIN {exit !(x != "fail" && x + 0 < t + 0)}'; }

# ------------------------------------------------------------------ flood
if part flood; then
    say "== flood: $FLOOD idle connections, raw then TLS"
    start_server "$WORK/flood" --fsync never
    base_rss=$(rss_kib "$SRV_PID")
    for mode in raw tls; do
        args=(--count "$FLOOD" --seconds 40 --ready "$WORK/ready-$mode")
        [[ $mode == tls ]] && args+=(--tls --sources 16)
        python3 "$HERE/idle-flood.py" "$SRV_ADDR" "${args[@]}" >"$WORK/flood-$mode.json" 2>"$WORK/flood-$mode.err" &
        fpid=$!; PIDS+=("$fpid")
        for _ in $(seq 300); do [[ -s $WORK/ready-$mode ]] && break; sleep 0.1; done
        sleep 2 # let the server see them all
        held=$(awk '{print $2}' "$WORK/ready-$mode" 2>/dev/null || echo "?")
        srv_fds=$(fds_of "$SRV_PID")
        worst_put=0; worst_get=0; fails=0
        for i in 1 2 3; do
            read -r p g < <(timed_put_get "flood-$mode-$i" || true)
            say "  $mode flood: put ${p}s get ${g}s (held by flood: $held, server fds: $srv_fds)"
            under "$p" "$TARGET" && under "$g" "$TARGET" || fails=$((fails + 1))
            worst_put=$(awk -v a="$worst_put" -v b="$p" 'BEGIN {print (b == "fail" || b + 0 > a + 0) ? b : a}')
            worst_get=$(awk -v a="$worst_get" -v b="$g" 'BEGIN {print (b == "fail" || b + 0 > a + 0) ? b : a}')
            sleep 1
        done
        [[ $fails == 0 ]] && ok "$mode flood of $FLOOD: put+get verified, each under ${TARGET}s (worst put ${worst_put}s, get ${worst_get}s)" ||
            bad "$mode flood of $FLOOD: $fails of 3 rounds of put+get failed or took ${TARGET}s or more (worst put ${worst_put}s, get ${worst_get}s)"
        peak=$(rss_kib "$SRV_PID")
        say "  server RSS with the $mode flood: $((peak / 1024)) MiB (before: $((base_rss / 1024)) MiB)"
        wait "$fpid" 2>/dev/null || true
        say "  flood: $(cat "$WORK/flood-$mode.json")"
    done
    busy=$(grep -ciE 'busy|drop|refus' "$SRV_LOG" || true)
    say "  server log lines about refusals/drops: $busy"
    # logged, but rate-limited: at most 5 lines a second on average
    [[ $busy -le 400 ]] && ok "refusals and drops logged at a bounded rate ($busy lines for 80 s of floods)" ||
        bad "refusals and drops flood the log: $busy lines in 80 s (more than 5/s)"
    check "server alive after the floods" still_serves flood
    stop_server
fi

# ------------------------------------------------------------------ slow peers
if part slow; then
    DT=${SLOW_DATA_TIMEOUT:-5}
    say "== slow peers: --max-connections 4, --data-timeout ${DT}s"
    start_server "$WORK/slow" --fsync never --max-connections 4 --data-timeout "${DT}s"
    random_file "$WORK/big" 64000000
    big_sha=$(sha "$WORK/big")
    timeout 120 "$SFT" -q put "$WORK/big" --as big.bin >/dev/null || die "cannot upload the big file"
    echo "$big_sha  big.bin" >"$WORK/slow.manifest"
    # slow readers: four downloads stopped halfway
    stopped=()
    for i in 1 2 3 4; do
        "$SFT" -q get big.bin -o "$WORK/slow-get-$i" --limit-rate 2MB >/dev/null 2>&1 &
        stopped+=($!); PIDS+=($!)
    done
    sleep 2
    for p in "${stopped[@]}"; do kill -STOP "$p"; done
    t0=$(date +%s)
    got=""
    while (($(date +%s) - t0 < DT + 20)); do
        if r=$(timed_put_get "after-slow-readers" 2>/dev/null); then got=$r; break; fi
        sleep 1
    done
    waited=$(($(date +%s) - t0))
    [[ -n $got ]] && ok "4 stopped readers: a fifth client got through after ${waited}s (put+get: $got s; data timeout ${DT}s)" ||
        bad "4 stopped readers lock out a fifth client for $((DT + 20))s (data timeout ${DT}s)"
    for p in "${stopped[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
    for p in "${stopped[@]}"; do wait "$p" 2>/dev/null || true; done
    partial=0
    for i in 1 2 3 4; do
        if [[ -e $WORK/slow-get-$i ]] && [[ $(sha "$WORK/slow-get-$i") != "$big_sha" ]]; then partial=$((partial + 1)); fi
    done
    [[ $partial == 0 ]] && ok "stopped readers left no partial download under the final name" ||
        bad "$partial partial downloads left under their final names"
    # slow writers: four uploads stopped halfway
    stopped=()
    : >"$WORK/slow.maybe"
    for i in 1 2 3 4; do
        # content of its own: what the server already holds for this user
        # would be stored from that at once (CLONE), not sent slowly
        random_file "$WORK/up-src-$i" 64000000
        echo "$(sha "$WORK/up-src-$i")  up-$i.bin" >>"$WORK/slow.maybe"
        "$SFT" -q put "$WORK/up-src-$i" --as "up-$i.bin" --limit-rate 2MB >/dev/null 2>&1 &
        stopped+=($!); PIDS+=($!)
    done
    sleep 2
    for p in "${stopped[@]}"; do kill -STOP "$p" 2>/dev/null || true; done
    t0=$(date +%s)
    got=""
    while (($(date +%s) - t0 < DT + 20)); do
        if r=$(timed_put_get "after-slow-writers" 2>/dev/null); then got=$r; break; fi
        sleep 1
    done
    waited=$(($(date +%s) - t0))
    [[ -n $got ]] && ok "4 stopped writers: a fifth client got through after ${waited}s (put+get: $got s)" ||
        bad "4 stopped writers lock out a fifth client for $((DT + 20))s (data timeout ${DT}s)"
    for p in "${stopped[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    sleep 1
    grep -h '  after-slow\|  big.bin' /dev/null || true
    # what a client acknowledged in this part: big.bin and the probes
    timeout 60 "$SFT" -q sums 2>/dev/null | grep '  after-slow' >>"$WORK/slow.manifest" || true
    invariants "$WORK/slow/root" "$WORK/slow.manifest" "$WORK/slow.maybe" "slow peers:"
    stop_server
fi

# ------------------------------------------------------------------ descriptors
if part nofile; then
    NOFILE=${NOFILE_LIMIT:-64}
    say "== descriptors: server under prlimit --nofile=$NOFILE, 400 idle connections"
    SRV_WRAP=(prlimit "--nofile=$NOFILE:$NOFILE" --)
    start_server "$WORK/nofile" --fsync never
    SRV_WRAP=()
    say "  server pid $SRV_PID, limit: $(grep 'Max open files' "/proc/$SRV_PID/limits" | awk '{print $4 "/" $5}')"
    lines0=$(wc -l <"$SRV_LOG")
    python3 "$HERE/idle-flood.py" "$SRV_ADDR" --count 400 --seconds 20 --ready "$WORK/ready-nofile" \
        >"$WORK/flood-nofile.json" 2>&1 &
    fpid=$!; PIDS+=("$fpid")
    for _ in $(seq 300); do [[ -s $WORK/ready-nofile ]] && break; sleep 0.1; done
    # measured, not judged: how long a real client takes to get a put+get
    # through while descriptors are exhausted (retrying what is refused)
    t0=$(date +%s.%N)
    during=""
    for try in $(seq 30); do
        if during=$(SFT_TIMEOUT=30s timed_put_get "nofile-during-$try" 2>"$WORK/nofile-err"); then break; fi
        during=""
        [[ $try == 1 ]] && say "  first attempt during the flood: $(grep -m1 'failed' "$WORK/nofile-err")"
        (($(date +%s) - ${t0%.*} > 30)) && break
        sleep 1
    done
    if [[ -n $during ]]; then
        say "  put+get during the flood: through after $(dt "$t0" "$(date +%s.%N)") s, attempt $try (last: $during s)"
    else
        say "  put+get during the flood: not through within 30 s"
    fi
    wait "$fpid" 2>/dev/null || true
    kill -0 "$SRV_PID" 2>/dev/null && ok "server alive under --nofile=$NOFILE with 400 connections" ||
        bad "server died under --nofile=$NOFILE"
    warn=$(tail -n +"$((lines0 + 1))" "$SRV_LOG" | grep -c 'WARN' || true)
    rate=$(awk -v n="$warn" 'BEGIN {printf "%.1f", n / 20}')
    say "  WARN lines during 20 s of descriptor exhaustion: $warn ($rate/s)"
    awk -v r="$rate" 'BEGIN {exit !(r <= 2)}' && ok "accept failures logged at a bounded rate ($rate WARN lines/s)" ||
        bad "accept failures flood the log: $rate WARN lines/s"
    sleep 1
    after=$(timed_put_get nofile-after || echo "fail fail")
    read -r p g <<<"$after"
    under "$p" "$TARGET" && under "$g" "$TARGET" && ok "after the flood a client is served at once (put ${p}s get ${g}s)" ||
        bad "after the flood a client waits: put ${p}s get ${g}s"
    stop_server
fi

# ------------------------------------------------------------------ soak
soak_client() { # ID SECONDS DIR: a loop of mixed operations; writes DIR/ID.{ok,fail,live}
    local id=$1 secs=$2 dir=$3 end=$(($(date +%s) + $2)) n=0 okc=0 failc=0
    local mine=() shas=() f="$dir/c$id.data" name i op size
    : >"$dir/c$id.log"
    while (($(date +%s) < end)); do
        n=$((n + 1))
        op=$((RANDOM % 10))
        if ((${#mine[@]} == 0 || op < 4)); then
            size=$(((RANDOM * 32768 + RANDOM) % 2000000 + 1))
            head -c "$size" /dev/urandom >"$f"
            local want; want=$(sha "$f")
            if out=$(timeout 120 "$SFT" -q put "$f" --as "c$id/f$n.bin" 2>&1) &&
                [[ ${out%% *} == "$want" ]]; then
                name=${out#*  }
                mine+=("$name"); shas+=("$want"); okc=$((okc + 1))
                echo "put ok $name $size" >>"$dir/c$id.log"
            else
                failc=$((failc + 1)); echo "put FAIL $out" >>"$dir/c$id.log"
            fi
        elif ((op < 8)); then
            i=$((RANDOM % ${#mine[@]}))
            if timeout 120 "$SFT" -q get "${mine[$i]}" -o "$f.back" --force --sha256 "${shas[$i]}" >/dev/null 2>"$f.err" &&
                [[ $(sha "$f.back") == "${shas[$i]}" ]]; then
                okc=$((okc + 1)); echo "get ok ${mine[$i]}" >>"$dir/c$id.log"
            else
                failc=$((failc + 1)); echo "get FAIL ${mine[$i]} $(head -1 "$f.err")" >>"$dir/c$id.log"
            fi
            rm -f "$f.back"
        elif ((op == 8)); then
            i=$((RANDOM % ${#mine[@]}))
            if timeout 60 "$SFT" -q rm "${mine[$i]}" >/dev/null 2>"$f.err"; then
                okc=$((okc + 1)); echo "rm ok ${mine[$i]}" >>"$dir/c$id.log"
                mine=("${mine[@]:0:$i}" "${mine[@]:$((i + 1))}")
                shas=("${shas[@]:0:$i}" "${shas[@]:$((i + 1))}")
            else
                failc=$((failc + 1)); echo "rm FAIL ${mine[$i]} $(head -1 "$f.err")" >>"$dir/c$id.log"
            fi
        else
            if timeout 60 "$SFT" -q ls "c$id" >/dev/null 2>"$f.err" && timeout 60 "$SFT" -q df >/dev/null 2>>"$f.err"; then
                okc=$((okc + 1))
            else
                failc=$((failc + 1)); echo "ls/df FAIL $(head -1 "$f.err")" >>"$dir/c$id.log"
            fi
        fi
    done
    for i in "${!mine[@]}"; do echo "${shas[$i]}  ${mine[$i]}"; done >"$dir/c$id.live"
    echo "$okc $failc" >"$dir/c$id.count"
    rm -f "$f" "$f.err"
}

if part soak; then
    say "== soak: $CLIENTS mixed clients for ${SECONDS_SOAK}s"
    start_server "$WORK/soak" --fsync always --max-connections "$((CLIENTS * 2 + 16))"
    D=$WORK/soak/clients
    mkdir -p "$D"
    fd0=$(fds_of "$SRV_PID")
    rss0=$(rss_kib "$SRV_PID")
    cpids=()
    for i in $(seq "$CLIENTS"); do
        soak_client "$i" "$SECONDS_SOAK" "$D" &
        cpids+=($!); PIDS+=($!)
    done
    samples=()
    t0=$(date +%s)
    while (($(date +%s) - t0 < SECONDS_SOAK + 5)); do
        samples+=("$(($(date +%s) - t0)):$(rss_kib "$SRV_PID")")
        kill -0 "$SRV_PID" 2>/dev/null || break
        sleep 3
    done
    # clients finish their last operation (bounded by their own timeouts)
    for p in "${cpids[@]}"; do wait "$p" 2>/dev/null || true; done
    samples+=("$(($(date +%s) - t0)):$(rss_kib "$SRV_PID")")
    say "  server RSS (s:MiB), baseline $((rss0 / 1024)) MiB:"
    printf '%s\n' "${samples[@]}" | awk -F: '{printf "    %4ds %7.1f MiB\n", $1, $2 / 1024}' >&2
    verdict=$(printf '%s\n' "${samples[@]}" | awk -F: '
        {t[NR] = $2} END {
            n = NR; if (n < 6) {print "too few samples"; exit}
            # warm-up: the first third; the curve is flat if the last third
            # stays within 25% (+16 MiB) of the peak of the middle third
            a = int(n / 3); b = int(2 * n / 3)
            for (i = a + 1; i <= b; i++) if (t[i] > mid) mid = t[i]
            for (i = b + 1; i <= n; i++) if (t[i] > last) last = t[i]
            lim = mid * 1.25 + 16384
            printf "%s: middle-third peak %.1f MiB, last-third peak %.1f MiB (limit %.1f)\n", (last <= lim ? "flat" : "GROWING"), mid / 1024, last / 1024, lim / 1024
        }')
    [[ $verdict == flat* ]] && ok "RSS after warm-up: $verdict" || bad "RSS after warm-up: $verdict"
    okc=0; failc=0
    for i in $(seq "$CLIENTS"); do
        read -r a b <"$D/c$i.count" || { a=0; b=1; }
        okc=$((okc + a)); failc=$((failc + b))
    done
    puts=$(cat "$D"/c*.log | grep -c '^put ok' || true)
    gets=$(cat "$D"/c*.log | grep -c '^get ok' || true)
    say "  operations: $okc ok ($puts verified puts, $gets verified gets), $failc failed"
    grep -h FAIL "$D"/c*.log | head -5 | sed 's/^/    /' >&2 || true
    [[ $failc == 0 && $okc -gt 0 ]] && ok "soak: $okc operations of $CLIENTS clients, every transfer verified, none failed" ||
        bad "soak: $failc of $((okc + failc)) operations failed"
    sleep 2
    fd1=$(fds_of "$SRV_PID")
    [[ $fd1 -le $((fd0 + 4)) ]] && ok "descriptors back to baseline ($fd0 before, $fd1 after)" ||
        bad "descriptors not back to baseline ($fd0 before, $fd1 after)"
    cat "$D"/c*.live >"$WORK/soak.manifest"
    used=$(used_by_server); disk=$(bytes_on_disk "$WORK/soak/root")
    say "  sft df: ${used:-?} B used; du of the root: $(du -sb --exclude='.sft-tmp-*' "$WORK/soak/root" | cut -f1) B (apparent, with directories); files: $disk B"
    invariants "$WORK/soak/root" "$WORK/soak.manifest" /dev/null "soak:"
    stop_server
fi

finish
