#!/usr/bin/env bash
# Several streams for one transfer (--streams) against one stream, scp, rsync and curl+nginx, on
# the namespace links of ../shared/bench/peers.sh, interleaved in one run (medians of REPS).
# Needs root. Not part of the test suite. Takes minutes: 256 MiB at 3.8 MB/s is ~70 s a run.
#
#   benches/streams.sh                 # setup, then fat, tar, 1g, down, and the tables
#   benches/streams.sh fat             # the scaled fat link only
#   FAT_DATASET=A64.bin REPS=1 benches/streams.sh fat   # a quick pass (64 MiB; auto has less
#                                      # time to ramp up on a smaller file)
#
# Phases:
#   fat   100 Mbit, 100 ms RTT (DELAY2_US=50000), both namespaces' tcp_rmem/tcp_wmem maximum
#         clamped to 640 KiB: one TCP stream is window-limited there. 256 MiB random (A256.bin).
#         Cases: sft --streams 1, auto, 4; scp; rsync; curl+nginx. Also the link's rate
#         (iperf3 -P 8) and one iperf3 stream.
#   tar   100 Mbit, 20 ms RTT (the peers' default), unclamped: 256 MiB of kernel tar (B256.tar),
#         sft auto (streams and compression) against rsync zstd.
#   1g    the 1 Gbit veth link, 256 MiB random: sft --streams 1 against auto.
#   lo    loopback, 1 GiB random (A.bin), up and down: sft --streams 1 against auto.
#   memory  the server's peak resident memory (VmHWM) while one 1 GiB file goes up, then down,
#         with --streams 8 over loopback (root on tmpfs, default --memory-budget), against
#         --streams 1.
# Results: $BENCH_DIR/results/streams-PHASE.tsv; `table` prints them with the ratios.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PEERS=${PEERS:-$repo/../shared/bench/peers.sh}
[[ -f $PEERS ]] || { echo "peers.sh not found at $PEERS (set PEERS=...)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "run as root (namespaces)" >&2; exit 1; }
cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml"
export SFT=${SFT:-${CARGO_TARGET_DIR:-$repo/target}/release/sft}
export EXTRA_CASES=$here/streams-cases.sh
export BENCH_DIR=${BENCH_DIR:-/srv/sft-bench}
export REPS=${REPS:-3}
RES=$BENCH_DIR/results
peers() { bash "$PEERS" "$@"; }

clamp() {
    local ns
    for ns in sftb-srv sftb-cli; do
        ip netns exec $ns sysctl -qw net.ipv4.tcp_rmem='4096 131072 655360' net.ipv4.tcp_wmem='4096 16384 655360'
    done
}

# link_rate IP TAG: the link's TCP capacity (8 streams) and one stream's, MB/s, into the results
link_rate() {
    local ip=$1 tag=$2 r p bps
    ip netns exec sftb-srv iperf3 -s -B "$ip" -p 5298 -D -I "$RES/iperf3-streams.pid"
    sleep 0.5
    for ((r = 1; r <= REPS; r++)); do
        for p in 8 1; do
            bps=$(ip netns exec sftb-cli iperf3 -c "$ip" -p 5298 -t 10 -P $p -J | jq '.end.sum_received.bits_per_second')
            printf '%s\t%s\tiperf3_P%s\tlink\tup\t%s\t0\t0\t%.2f\t0\t0\tok\n' "$(date +%FT%T)" "$tag" "$p" "$r" \
                "$(bc -l <<<"$bps/8000000")" | tee -a "$RES/streams-$tag.tsv" >&2
        done
    done
    kill "$(cat "$RES/iperf3-streams.pid")" 2>/dev/null || true
}

phase_fat() {
    DELAY2_US=50000 peers down # the delay line takes its delay when it starts
    DELAY2_US=50000 peers ns-up
    clamp
    link_rate 198.18.1.1 fat
    DELAY2_US=50000 NS2_DATASETS=${FAT_DATASET:-A256.bin} RESULTS=$RES/streams-fat.tsv \
        ONLY='^(sft_s1|sft_auto|sft_s4|scp|rsync|curl)$' peers ns-100m
}
phase_tar() {
    peers down
    peers ns-up
    NS2_DATASETS=B256.tar RESULTS=$RES/streams-tar.tsv ONLY='^(sft_auto|sft_s1|rsync_zstd)$' peers ns-100m
}
phase_1g() {
    peers ns-up
    NS1_DATASETS=A256.bin RESULTS=$RES/streams-1g.tsv ONLY='^(sft_s1|sft_auto)$' peers ns-1g
}
phase_lo() {
    LO_DATASETS=A.bin RESULTS=$RES/streams-lo.tsv ONLY='^(sft_s1|sft_auto)$' peers loopback
}

phase_memory() {
    local dir n dirn pid port=9455 tok
    for n in 1 8; do
        dir=$(mktemp -d /dev/shm/sftb-mem.XXXXXX)
        mkdir -p "$dir/root" "$dir/cli"
        tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        (umask 077 && echo "$tok" >"$dir/tokens")
        "$SFT" serve --root "$dir/root" --listen 127.0.0.1:$port --fsync never --token-file "$dir/tokens" \
            --state-dir "$dir/state" >"$dir/serve.out" 2>"$dir/serve.log" &
        pid=$!
        for _ in $(seq 50); do grep -q '^listening' "$dir/serve.out" 2>/dev/null && break; sleep 0.1; done
        local pin
        pin=$(grep -o '[0-9a-f]\{64\}' "$dir/serve.out" | head -1)
        local env=(env SFT_SERVER=127.0.0.1:$port SFT_TOKEN="$tok" SFT_PIN="$pin" SFT_STREAMS=$n SFT_COMPRESS=off)
        "${env[@]}" "$SFT" --quiet put "$BENCH_DIR/data/A.bin" --as A.bin
        local up
        up=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
        "${env[@]}" "$SFT" --quiet get A.bin -o "$dir/cli/A.bin"
        local both
        both=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
        cmp -s "$BENCH_DIR/data/A.bin" "$dir/cli/A.bin" && ok=ok || ok=FAIL
        printf 'server peak RSS, 1 GiB with --streams %s: after the upload %d MiB, after the download %d MiB (%s)\n' \
            "$n" $((up / 1024)) $((both / 1024)) "$ok" | tee -a "$RES/streams-memory.txt"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rm -rf "$dir"
    done
}

# medians per case, and the ratios the issue asks for
table() {
    local f
    for f in "$RES"/streams-{fat,tar,1g,lo}.tsv; do
        [[ -s $f ]] || continue
        echo "== $(basename "$f" .tsv)"
        RESULTS=$f peers table 2>/dev/null | sed -n '1,/^$/p'
        awk -F'\t' '$1!="time" { k=$3"/"$5; v[k]=v[k]" "$9 }
            function med(s,   a,m,i,j,t) { m=split(s,a," "); for(i=1;i<=m;i++) for(j=i+1;j<=m;j++) if(a[j]+0<a[i]+0){t=a[i];a[i]=a[j];a[j]=t}
                return (m%2)? a[(m+1)/2] : (a[m/2]+a[m/2+1])/2 }
            END { for (k in v) m[k]=med(v[k])
                  r("sft_auto/up","iperf3_P8/up","auto / link (8 iperf3 streams)")
                  r("sft_auto/up","sft_s1/up","auto / one stream, up")
                  r("sft_auto/down","sft_s1/down","auto / one stream, down")
                  r("sft_auto/up","scp/up","auto / scp"); r("sft_auto/up","rsync/up","auto / rsync")
                  r("sft_auto/up","curl/up","auto / curl+nginx"); r("sft_auto/up","rsync_zstd/up","auto / rsync zstd") }
            function r(a,b,label) { if ((a in m) && (b in m) && m[b]>0) printf "  %-34s %.2f\n", label, m[a]/m[b] }' "$f"
        echo
    done
    [[ -s $RES/streams-memory.txt ]] && { echo "== memory"; cat "$RES/streams-memory.txt"; }
    return 0
}

(($#)) || set -- install data conf fat tar 1g lo memory down table
for s in "$@"; do
    case $s in
    install | data | conf | down) peers "$s" ;;
    fat | tar | 1g | lo | memory) "phase_$s" ;;
    table) table ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
    esac
done
