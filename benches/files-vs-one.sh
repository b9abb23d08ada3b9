#!/usr/bin/env bash
# "5,000 small files move about as fast as one file of the same total size": sft moving the
# 5,000 files of peers.sh's dataset C/ (put -r / get -r, one connection, pipelined) side by side
# with the one tar of the same files (C.tar), both directions, over loopback TLS. Interleaved:
# each repetition runs every case once, so all share the machine's drift. Every transfer is
# verified (tree digest or file digest) before its time counts.
#
# Destinations: tmpfs (file creation costs next to nothing: the protocol's own cost), and a
# fresh ext4 filesystem on the work disk (a loop-mounted image made here, so earlier runs'
# deletions cannot slow its inode allocation) with the server's default --fsync always: what
# a user gets, every upload on stable storage before it is acknowledged. For scale, the same
# files unpacked locally with `tar x` (then `sync -f` for the durable figure) are timed too.
#
#   REPS=5 benches/files-vs-one.sh          # needs peers.sh's data (benches/many.sh makes it)
#
# Writes $BENCH_DIR/results/files-vs-one.tsv and prints medians.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/srv/sft-bench}
REPS=${REPS:-5}
D=$BENCH_DIR/data
R=$BENCH_DIR/results
[[ -d $D/C && -f $D/C.tar ]] || { echo "no dataset C; run benches/many.sh first" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
SFT=${SFT:-${CARGO_TARGET_DIR:-$repo/target}/release/sft}
mkdir -p "$R"
OUT=$R/files-vs-one.tsv
W=$(mktemp -d /dev/shm/sft-fvo.XXXXXX)       # client side and tmpfs server root
E=$(mktemp -d "$BENCH_DIR/fvo.XXXXXX")        # a fresh ext4: server root and client side
IMG=$BENCH_DIR/fvo-ext4.img
pids=()
LOOP=
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    mountpoint -q "$E" && umount "$E"
    [[ -n $LOOP ]] && losetup -d "$LOOP"
    rm -rf "$W" "$E" "$IMG"
}
trap cleanup EXIT
truncate -s 8G "$IMG"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
# direct I/O: the image's blocks are not cached a second time under the filesystem's own cache
LOOP=$(losetup -f --show --direct-io=on "$IMG")
mount "$LOOP" "$E"

# start_server NAME ROOT [ARGS]: a server on a free port; sets PORT_<NAME>
start_server() {
    local name=$1 root=$2; shift 2
    mkdir -p "$W/state-$name" "$root"
    SFT_STATE_DIR=$W/state-$name "$SFT" serve --root "$root" --listen 127.0.0.1:0 "$@" \
        >"$W/$name.out" 2>"$W/$name.log" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q '^listening on' "$W/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    local addr
    addr=$(sed -n 's/^listening on //p' "$W/$name.out")
    [[ -n $addr ]] || { echo "server $name did not start" >&2; cat "$W/$name.log" >&2; exit 1; }
    printf -v "ADDR_$name" '%s' "$addr"
    printf -v "PIN_$name" '%s' "$(openssl x509 -in "$W/state-$name/cert.pem" -outform der | sha256sum | cut -d' ' -f1)"
}
start_server tmpfs "$W/srv" --fsync never
start_server ext4 "$E/srv"

# sft_to NAME ARGS...: the client against server NAME
sft_to() {
    local name=$1 addr_var=ADDR_$1 pin_var=PIN_$1; shift
    SFT_SERVER=${!addr_var} SFT_TOKEN_FILE=$W/state-$name/token SFT_PIN=${!pin_var} \
        "$SFT" -q "$@" >/dev/null
}

tree_digest() { (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }
files_bytes=$(find "$D/C" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
tar_bytes=$(stat -c %s "$D/C.tar")
want_tree=$(tree_digest "$D/C")
want_tar=$(sha256sum <"$D/C.tar" | cut -d' ' -f1)
mkdir -p "$W/ref" && tar -C "$W/ref" -xf "$D/C.tar"
want_untar=$(tree_digest "$W/ref/C")   # C.tar leaves out peers.sh's marker file
rm -rf "$W/ref"

# the server side of each tree, for downloads
sft_to tmpfs put -r "$D/C" && sft_to tmpfs put "$D/C.tar"
sft_to ext4 put -r "$D/C" && sft_to ext4 put "$D/C.tar"

[[ -s $OUT ]] || printf 'time\tdest\tcase\trep\tbytes\tseconds\tMBps\tverified\n' >"$OUT"
# run DEST CASE REP: one timed transfer, verified, then deleted (memory stays bounded: on this
# VM, memory touched for the first time is slow). Measured: on the fresh filesystem, deleting
# and creating the tree again costs the same each time (unlike the long-used work disk, whose
# inode allocator slows down after many deletions).
run() {
    local dest=$1 c=$2 rep=$3 srv cli up bytes t0 t1 ok got
    if [[ $dest == tmpfs ]]; then srv=$W/srv; cli=$W/cli-$c-$rep; else srv=$E/srv; cli=$E/cli-$c-$rep; fi
    up=up-$c-$rep
    mkdir -p "$cli"; sync
    t0=$(date +%s%N)
    case $c in
    tar_x) mkdir -p "$srv/$up" && tar -C "$srv/$up" -xf "$D/C.tar" ;;
    tar_x_sync) mkdir -p "$srv/$up" && tar -C "$srv/$up" -xf "$D/C.tar" && sync -f "$srv/$up" ;;
    put_files) sft_to "$dest" put -r "$D/C" "$up" ;;
    put_one) sft_to "$dest" put "$D/C.tar" --as "$up/C.tar" ;;
    get_files) sft_to "$dest" get -r C "$cli" ;;
    get_one) sft_to "$dest" get C.tar -o "$cli/C.tar" ;;
    esac
    t1=$(date +%s%N)
    case $c in
    tar_x | tar_x_sync) got=$(tree_digest "$srv/$up/C"); ok=$want_untar; bytes=$files_bytes ;;
    put_files) got=$(tree_digest "$srv/$up/C"); ok=$want_tree; bytes=$files_bytes ;;
    get_files) got=$(tree_digest "$cli/C"); ok=$want_tree; bytes=$files_bytes ;;
    put_one) got=$(sha256sum <"$srv/$up/C.tar" | cut -d' ' -f1); ok=$want_tar; bytes=$tar_bytes ;;
    get_one) got=$(sha256sum <"$cli/C.tar" | cut -d' ' -f1); ok=$want_tar; bytes=$tar_bytes ;;
    esac
    [[ $got == "$ok" ]] && ok=ok || ok=FAIL
    rm -rf "${srv:?}/$up" "$cli"; sync
    local secs
    secs=$(bc -l <<<"($t1-$t0)/1000000000")
    printf '%s\t%s\t%s\t%d\t%d\t%.3f\t%.1f\t%s\n' "$(date +%FT%T)" "$dest" "$c" "$rep" "$bytes" "$secs" \
        "$(bc -l <<<"$bytes/$secs/1000000")" "$ok" | tee -a "$OUT" >&2
}

for ((rep = 1; rep <= REPS; rep++)); do
    for dest in tmpfs ext4; do
        for c in put_files put_one get_files get_one tar_x tar_x_sync; do run "$dest" "$c" "$rep"; done
    done
done

echo "== medians, MB/s of file bytes (files/one: the 5,000 files against one file of the same bytes)"
awk -F'\t' 'NR > 1 && $8 == "ok" { print $2 "\t" $3 "\t" $7 }' "$OUT" | sort -t$'\t' -k1,2 -k3,3n |
    awk -F'\t' '{ k = $1 "\t" $2; n[k]++; v[k, n[k]] = $3 }
        END {
            for (k in n) { c = n[k]; m[k] = (c % 2) ? v[k, (c + 1) / 2] : (v[k, c / 2] + v[k, c / 2 + 1]) / 2 }
            split("tmpfs ext4", ds, " "); split("put get", ops, " ")
            printf "dest\top\tfiles\tone\tfiles/one\ttar x (local)\ttar x + sync\n"
            for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
                f = m[ds[i] "\t" ops[j] "_files"]; o = m[ds[i] "\t" ops[j] "_one"]
                if (o > 0) printf "%s\t%s\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\n", ds[i], ops[j], f, o, f / o,
                    m[ds[i] "\ttar_x"], m[ds[i] "\ttar_x_sync"]
            }
        }'
