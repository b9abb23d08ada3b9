#!/usr/bin/env bash
# Faults against a real `sft serve` on 127.0.0.1 (issue 13, THREATS.md
# "Faults"). Every case ends with THREATS.md's invariants checked on the
# server's root: the server serves a fresh put+get; every acknowledged upload
# is listed with its digest and its bytes on disk match; nothing half-
# visible (every listed file is acknowledged or a whole copy of an upload
# whose outcome is unknown; an upload the client was told failed is not
# visible); no reserved temporary name visible, none left after a restart;
# `sft df` equals the bytes on disk.
#
#   benches/faults.sh               every case (root needed for tmpfs, the
#                                   read-only root; strace for EIO)
#   FAULTS_FAST=1 benches/faults.sh the fast cases (CI): fewer loop rounds
#   FAULTS_CASES="kill-client ack-loop eio-dirsync" ...   a subset
#
# Cases: kill-client stop-client kill-server stop-server ack-loop full-disk
#        eio-write eio-datasync eio-dirsync eio-rename readonly
set -euo pipefail
# shellcheck source=benches/sft-lib.sh
source "$(dirname "$0")/sft-lib.sh"
CASES=${FAULTS_CASES:-kill-client stop-client kill-server stop-server ack-loop full-disk eio-write eio-datasync eio-dirsync eio-rename readonly}
case_on() { [[ " $CASES " == *" $1 "* ]]; }
if [[ -n ${FAULTS_FAST:-} ]]; then ROUNDS=${ACK_ROUNDS:-5}; else ROUNDS=${ACK_ROUNDS:-30}; fi
SKIPS=0
skip() { SKIPS=$((SKIPS + 1)); say "SKIP  $*"; }

sft_bin
WORK=$(mktemp -d /tmp/sft-faults.XXXXXX)
PIDS=()
MOUNTS=()
cleanup() {
    local p m
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -KILL "$p" 2>/dev/null || true; done
    stop_server KILL
    for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [[ -n ${FAULTS_KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
SRV_WRAP=()

# A case's books: MAN (acknowledged: "sha  name"), MAYBE (outcome unknown),
# FAILED (the client was told it failed: must not be visible).
new_books() { MAN=$WORK/$1.ack; MAYBE=$WORK/$1.maybe; FAILED=$WORK/$1.failed; : >"$MAN"; : >"$MAYBE"; : >"$FAILED"; }

# put_file FILE NAME [flags]: an upload whose outcome goes into the books
put_file() {
    local f=$1 name=$2 want out; shift 2
    want=$(sha "$f")
    if out=$(timeout 120 "$SFT" -q put "$f" --as "$name" "$@" 2>"$f.err"); then
        if [[ ${out%% *} == "$want" ]]; then
            echo "$out" >>"$MAN"
        else
            bad "put $name: acknowledged with digest ${out%% *}, sent $want"
        fi
        return 0
    fi
    echo "$want  $name" >>"$FAILED"
    return 1
}

# failed_not_visible ROOT TAG: no upload the client was told failed is visible
failed_not_visible() {
    local n=0 d name sums
    sums=$(cd "$1" && find . -type f ! -name '.sft-tmp-*' -print0 | xargs -0r sha256sum)
    while read -r d name; do
        [[ -n $d ]] || continue
        if grep -q "^$d " <<<"$sums"; then
            n=$((n + 1)); say "  told failed, yet visible: $name"
        fi
    done <"$FAILED"
    [[ $n == 0 ]] && ok "$2 no upload reported failed is visible ($(grep -c . "$FAILED" || true) failed)" ||
        bad "$2 $n uploads reported failed are visible anyway"
}

# live_ledger ROOT TAG: sft df against the disk, on the server as it is
live_ledger() {
    local used disk
    used=$(used_by_server || true); disk=$(bytes_on_disk "$1")
    [[ -n $used && $used == "$disk" ]] && ok "$2 ledger = disk on the live server ($disk B)" ||
        bad "$2 ledger = disk on the live server: sft df says ${used:-?} B, the root holds $disk B"
}

# spawn_put FILE NAME RATE: an upload in the background, slowed down; sets BG
spawn_put() {
    "$SFT" -q put "$1" --as "$2" --limit-rate "$3" >/dev/null 2>&1 &
    BG=$!; PIDS+=("$BG")
    echo "$(sha "$1")  $2" >>"$MAYBE"
}

wait_bytes_in() { # wait until some upload data reached the root (reserved names), max 10 s
    for _ in $(seq 100); do
        [[ $(find "$1" -name '.sft-tmp-*' -size +0 | wc -l) -gt 0 ]] && return 0
        sleep 0.1
    done
    return 1
}

random_file "$WORK/big" 40000000
# other content than big: an upload of content the server already holds for
# the same user is stored from it at once (CLONE), and would not be in flight
random_file "$WORK/big2" 40000000
random_file "$WORK/small" 300000

# ------------------------------------------------------------------ client killed / stopped
if case_on kill-client; then
    say "== SIGKILL of the client mid-upload"
    new_books kill-client
    start_server "$WORK/kc"
    put_file "$WORK/small" before.bin || true
    spawn_put "$WORK/big" killed.bin 4MB
    wait_bytes_in "$WORK/kc/root" || say "  (no data seen on disk before the kill)"
    kill -KILL "$BG"; wait "$BG" 2>/dev/null || true
    sleep 1
    invariants "$WORK/kc/root" "$MAN" "$MAYBE" "kill-client:"
    [[ -z $(find "$WORK/kc/root" -name 'killed.bin*') ]] && ok "kill-client: the killed upload left no file" ||
        bad "kill-client: the killed upload is visible"
    stop_server
fi

if case_on stop-client; then
    say "== SIGSTOP of the client mid-upload and mid-download (data timeout 3 s)"
    new_books stop-client
    start_server "$WORK/sc" --data-timeout 3s
    put_file "$WORK/big" big.bin || true
    spawn_put "$WORK/big2" stopped.bin 4MB
    up=$BG
    "$SFT" -q get big.bin -o "$WORK/sc-get" --limit-rate 4MB >/dev/null 2>&1 &
    down=$!; PIDS+=("$down")
    wait_bytes_in "$WORK/sc/root" || true
    sleep 1
    kill -STOP "$up" "$down"
    sleep 6
    # the server has given up on both: the reservation is released, nothing visible
    live_ledger "$WORK/sc/root" "stop-client:"
    kill -CONT "$up" "$down"
    wait "$up" 2>/dev/null && say "  (the stopped upload finished after all)" || true
    wait "$down" 2>/dev/null || true
    if [[ -e $WORK/sc-get ]] && [[ $(sha "$WORK/sc-get") != "$(sha "$WORK/big")" ]]; then
        bad "stop-client: a partial download is left under its final name"
    else
        ok "stop-client: no partial download under the final name"
    fi
    invariants "$WORK/sc/root" "$MAN" "$MAYBE" "stop-client:"
    stop_server
fi

# ------------------------------------------------------------------ server killed / stopped
if case_on kill-server; then
    say "== SIGKILL of the server mid-upload, restart on the same root"
    new_books kill-server
    start_server "$WORK/ks"
    put_file "$WORK/small" before.bin || true
    spawn_put "$WORK/big" inflight.bin 4MB
    wait_bytes_in "$WORK/ks/root" || true
    kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
    wait "$BG" 2>/dev/null && bad "kill-server: the upload in flight reported success" ||
        ok "kill-server: the upload in flight failed (exit non-zero)"
    start_server "$WORK/ks"
    no_leftovers "$WORK/ks/root" "kill-server: after restart"
    invariants "$WORK/ks/root" "$MAN" "$MAYBE" "kill-server:"
    stop_server
fi

if case_on stop-server; then
    say "== SIGSTOP of the server mid-upload for 5 s, then SIGCONT"
    new_books stop-server
    start_server "$WORK/ss"
    spawn_put "$WORK/big" paused.bin 8MB
    up=$BG
    wait_bytes_in "$WORK/ss/root" || true
    kill -STOP "$SRV_PID"
    sleep 5
    kill -CONT "$SRV_PID"
    if wait "$up"; then
        echo "$(sha "$WORK/big")  paused.bin" >>"$MAN"; ok "stop-server: the paused upload finished after SIGCONT"
    else
        ok "stop-server: the paused upload failed cleanly (client timeout)"
    fi
    invariants "$WORK/ss/root" "$MAN" "$MAYBE" "stop-server:"
    stop_server
fi

# ------------------------------------------------------------------ kill right after the acknowledgement
if case_on ack-loop; then
    say "== SIGKILL of the server right after each acknowledgement, $ROUNDS rounds"
    new_books ack-loop
    lost=0
    for i in $(seq "$ROUNDS"); do
        start_server "$WORK/ack"
        random_file "$WORK/ack-$i" $((RANDOM * 8 + 1))
        if put_file "$WORK/ack-$i" "ack-$i.bin"; then
            kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
        else
            say "  round $i: the upload failed before the kill"
            kill -KILL "$SRV_PID"; wait "$SRV_PID" 2>/dev/null || true
        fi
        SRV_PID=
        d=$(tail -1 "$MAN" | cut -d' ' -f1); n=$(tail -1 "$MAN" | cut -d' ' -f3-)
        if [[ -n $n && ( ! -f $WORK/ack/root/$n || $(sha "$WORK/ack/root/$n") != "$d" ) ]]; then
            lost=$((lost + 1)); say "  round $i: acknowledged $n lost or damaged"
        fi
    done
    [[ $lost == 0 ]] && ok "ack-loop: $ROUNDS kills right after acknowledgement, nothing lost ($(grep -c . "$MAN") files)" ||
        bad "ack-loop: $lost acknowledged uploads lost"
    start_server "$WORK/ack"
    no_leftovers "$WORK/ack/root" "ack-loop: after restart"
    invariants "$WORK/ack/root" "$MAN" "$MAYBE" "ack-loop:"
    stop_server
fi

# ------------------------------------------------------------------ a full disk
if case_on full-disk; then
    say "== a full tmpfs of 24 MiB"
    new_books full-disk
    mkdir -p "$WORK/fd/root"
    if mount -t tmpfs -o size=24m sft-faults "$WORK/fd/root" 2>/dev/null; then
        MOUNTS+=("$WORK/fd/root")
        start_server "$WORK/fd"
        refused=0
        for i in $(seq 12); do
            random_file "$WORK/fd-$i" 3000000
            if ! put_file "$WORK/fd-$i" "fill-$i.bin"; then
                refused=$((refused + 1))
                say "  fill-$i refused: $(head -1 "$WORK/fd-$i.err")"
                grep -q 'exit\|full\|space\|quota' "$WORK/fd-$i.err" || true
            fi
        done
        # a stream of unknown size, too
        if head -c 6000000 /dev/urandom | tee "$WORK/fd-stream" | timeout 60 "$SFT" -q put - --as stream.bin >"$WORK/fd-stream.out" 2>&1; then
            cat "$WORK/fd-stream.out" >>"$MAN"
        else
            echo "$(sha "$WORK/fd-stream")  stream.bin" >>"$FAILED"
        fi
        # the disk fills up under an upload in flight: room when it starts,
        # none halfway (a file placed beside it takes the rest)
        first=$(head -1 "$MAN" | cut -d' ' -f3-)
        second=$(sed -n 2p "$MAN" | cut -d' ' -f3-)
        for n in "$first" "$second"; do
            [[ -n $n ]] && timeout 60 "$SFT" -q rm "$n" >/dev/null && grep -vF "  $n" "$MAN" >"$MAN.t" && mv "$MAN.t" "$MAN"
        done
        random_file "$WORK/fd-mid" 5000000
        "$SFT" -q put "$WORK/fd-mid" --as midway.bin --limit-rate 2MB >"$WORK/fd-mid.out" 2>"$WORK/fd-mid.err" &
        mid=$!; PIDS+=("$mid")
        sleep 1
        head -c 30000000 /dev/zero >"$WORK/fd/root/.filler" 2>/dev/null || true
        if wait "$mid"; then
            cat "$WORK/fd-mid.out" >>"$MAN"; say "  midway.bin was stored after all"
        else
            echo "$(sha "$WORK/fd-mid")  midway.bin" >>"$FAILED"
            say "  midway.bin failed: $(head -1 "$WORK/fd-mid.err")"
        fi
        rm -f "$WORK/fd/root/.filler"
        grep -q 'full\|space' "$WORK/fd-mid.err" && ok "full-disk: a disk full mid-upload is reported as such" ||
            { [[ -s $WORK/fd-mid.err ]] && bad "full-disk: a disk full mid-upload is not reported as full: $(head -1 "$WORK/fd-mid.err")"; } || true
        [[ $refused -gt 0 ]] && ok "full-disk: $refused uploads refused when the disk filled" ||
            bad "full-disk: no upload was refused on a 24 MiB disk (check the test)"
        failed_not_visible "$WORK/fd/root" "full-disk:"
        live_ledger "$WORK/fd/root" "full-disk:"
        [[ $(leftovers "$WORK/fd/root") == 0 ]] && ok "full-disk: no reserved names left behind" ||
            bad "full-disk: $(leftovers "$WORK/fd/root") reserved names left behind on the live server"
        # make room for the probe of the invariants
        first=$(head -1 "$MAN" | cut -d' ' -f3-)
        if [[ -n $first ]]; then
            timeout 60 "$SFT" -q rm "$first" >/dev/null && sed -i '1d' "$MAN"
        fi
        invariants "$WORK/fd/root" "$MAN" "$MAYBE" "full-disk:"
        stop_server
        umount "$WORK/fd/root" && MOUNTS=("${MOUNTS[@]/$WORK\/fd\/root/}")
    else
        skip "full-disk: cannot mount a tmpfs (needs root)"
    fi
fi

# ------------------------------------------------------------------ injected I/O errors
# eio CASE SYSCALLS INJECT...: uploads through a server run under strace,
# with each INJECT an `-e inject=` spec (strace counts calls per thread:
# `when=2+2` fails every other call of each thread). Eight single uploads,
# then a pipelined batch of eight (group commit) on one connection. The
# live server's ledger and what is visible are checked, then it is
# restarted without faults and the invariants are checked.
eio() {
    local name=$1 calls=$2 i okn=0 failn=0 spec inj=(); shift 2
    for spec in "$@"; do inj+=(-e "inject=$spec"); done
    say "== EIO injected: $*"
    command -v strace >/dev/null || { apt-get install -y -qq strace >/dev/null 2>&1 || true; }
    command -v strace >/dev/null || { skip "$name: strace not installed"; return; }
    new_books "$name"
    SRV_WRAP=(strace -f -qq -o "$WORK/$name.strace" -e trace="$calls" "${inj[@]}" --)
    start_server "$WORK/$name" --data-timeout 10s
    SRV_WRAP=()
    for i in $(seq 8); do
        random_file "$WORK/$name-$i" $((RANDOM * 64 + 1000))
        if put_file "$WORK/$name-$i" "f-$i.bin"; then okn=$((okn + 1)); else
            failn=$((failn + 1)); say "  f-$i failed: $(head -1 "$WORK/$name-$i.err")"
        fi
    done
    mkdir -p "$WORK/$name-dir"
    for i in $(seq 8); do random_file "$WORK/$name-dir/g-$i.bin" $((RANDOM + 1)); done
    out=$(timeout 120 "$SFT" -q put -r "$WORK/$name-dir" batch 2>"$WORK/$name-batch.err") || true
    # the ones it acknowledged are in its output; the one its error names
    # was told it failed; it stops at the first error, so the outcome of
    # the rest is unknown to the client (maybe)
    grep -E '^[0-9a-f]{64}  ' <<<"$out" >>"$MAN" || true
    local named; named=$(sed -n "1s/.*'\(.*\)'.*/\1/p" "$WORK/$name-batch.err")
    for f in "$WORK/$name-dir"/*; do
        d=$(sha "$f")
        if grep -q "^$d " "$MAN"; then okn=$((okn + 1))
        elif [[ -n $named && $named == */$(basename "$f") ]]; then
            echo "$d  $named" >>"$FAILED"; failn=$((failn + 1))
        else
            echo "$d  batch/$(basename "$f")" >>"$MAYBE"
        fi
    done
    [[ -s $WORK/$name-batch.err ]] && say "  batch: $(head -1 "$WORK/$name-batch.err")"
    local injected; injected=$(grep -c INJECTED "$WORK/$name.strace" || true)
    say "  $okn acknowledged, $failn reported failed; $injected calls failed by injection"
    [[ $injected -gt 0 && $failn -gt 0 ]] && ok "$name: $injected injected errors, $failn uploads reported failed" ||
        bad "$name: the injection did not bite ($injected injected, $failn failed)"
    # strace fails every kind of write, including tokio's eventfd wake-ups,
    # which cannot fail with EIO in real life: tokio panics on those by design
    # ("failed to wake I/O driver"). Any other panic is a defect.
    local panics artefacts
    artefacts=$(grep -c 'failed to wake I/O driver' "$SRV_LOG" || true)
    panics=$(grep -A1 'panicked at' "$SRV_LOG" | grep -v 'panicked at\|^--$\|failed to wake I/O driver' | sort | uniq -c || true)
    [[ -z $panics ]] && ok "$name: no panic${artefacts:+ (besides $artefacts injected eventfd failures)}" ||
        bad "$name: the server panicked: $panics"
    failed_not_visible "$WORK/$name/root" "$name:"
    if timeout 20 "$SFT" -q df >/dev/null 2>&1; then
        live_ledger "$WORK/$name/root" "$name:"
    elif [[ $artefacts -gt 0 ]]; then
        skip "$name: live ledger (the server died of an injected eventfd failure)"
    else
        bad "$name: the server stopped answering"
    fi
    stop_server
    start_server "$WORK/$name"
    no_leftovers "$WORK/$name/root" "$name: after restart"
    failed_not_visible "$WORK/$name/root" "$name: after restart:"
    invariants "$WORK/$name/root" "$MAN" "$MAYBE" "$name:"
    stop_server
}

# writes fail now and then (every other write of each thread): file data,
# log lines and the runtime's own wake-ups alike; the server may die of the
# last (see eio()), what it leaves must still be consistent
case_on eio-write && eio eio-write write write:error=EIO:when=2+2
# the data sync fails: nothing may become visible
case_on eio-datasync && eio eio-datasync fdatasync,syncfs fdatasync,syncfs:error=EIO:when=1+2
# the directory sync after the rename fails (defect 3 of issue 13): the
# client, what is visible and the ledger must agree
case_on eio-dirsync && eio eio-dirsync fsync,syncfs fsync:error=EIO syncfs:error=EIO:when=2+2
# the rename fails
case_on eio-rename && eio eio-rename renameat2,renameat,linkat renameat2,renameat,linkat:error=EIO:when=1+2

# ------------------------------------------------------------------ a read-only root
if case_on readonly; then
    say "== a read-only root (its filesystem remounted read-only under the running server)"
    new_books readonly
    mkdir -p "$WORK/ro/root"
    if mount -t tmpfs -o size=16m sft-faults-ro "$WORK/ro/root" 2>/dev/null; then
        MOUNTS+=("$WORK/ro/root")
        start_server "$WORK/ro"
        put_file "$WORK/small" before.bin || true
        if mount -o remount,ro "$WORK/ro/root"; then
            random_file "$WORK/ro-1" 100000
            if put_file "$WORK/ro-1" after.bin; then
                bad "readonly: an upload to a read-only root was acknowledged"
            else
                ok "readonly: an upload to a read-only root is refused (exit non-zero)"
                msg=$(head -1 "$WORK/ro-1.err")
                say "  the client saw: $msg"
                grep -qi 'read-only' <<<"$msg" && ok "readonly: the error says read-only filesystem" ||
                    bad "readonly: the error does not say read-only filesystem (issue 13, defect 9)"
            fi
            if timeout 60 "$SFT" -q get before.bin -o "$WORK/ro-back" >/dev/null 2>&1 &&
                [[ $(sha "$WORK/ro-back") == "$(sha "$WORK/small")" ]]; then
                ok "readonly: downloads still work"
            else
                bad "readonly: downloads fail on a read-only root"
            fi
            failed_not_visible "$WORK/ro/root" "readonly:"
            live_ledger "$WORK/ro/root" "readonly:"
            mount -o remount,rw "$WORK/ro/root"
            invariants "$WORK/ro/root" "$MAN" "$MAYBE" "readonly: writable again:"
        else
            skip "readonly: cannot remount read-only"
        fi
        stop_server
        umount "$WORK/ro/root" && MOUNTS=("${MOUNTS[@]/$WORK\/ro\/root/}")
    else
        skip "readonly: cannot mount a tmpfs (needs root)"
    fi
fi

say "$SKIPS cases skipped"
finish
