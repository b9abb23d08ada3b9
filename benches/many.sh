#!/usr/bin/env bash
# Many small files: the 5000 files of 1-64 KiB (75.6 MB) of peers.sh's dataset C/, uploaded over
# loopback by `sft put -r` (one connection, pipelined) side by side with scp -r, rsync -a and
# tar|ssh, and -- for "about as fast as one file of the same total size" -- sft putting one
# tar of the same files (dataset C.tar, made here); then the directory cases again onto tmpfs
# (protocol cost without ext4's slow file creation). Needs root; not part of the test suite.
#
#   benches/many.sh            # REPS=3 by default; BENCH_DIR as in peers.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BENCH_DIR=${BENCH_DIR:-/srv/sft-bench} REPS=${REPS:-3}
R=$BENCH_DIR/results
mkdir -p "$R"
"$here/peers.sh" install data conf
trap '"$here/peers.sh" down >/dev/null 2>&1 || true' EXIT
D=$BENCH_DIR/data
if [[ ! -f $D/C.tar ]]; then
    tar -C "$D" --exclude=.complete -cf "$D/C.tar.tmp" C && mv "$D/C.tar.tmp" "$D/C.tar"
fi
grep -q '  C.tar$' "$D/SHA256SUMS" || printf '%s  C.tar\n' "$(sha256sum <"$D/C.tar" | cut -d' ' -f1)" >>"$D/SHA256SUMS"
rm -f "$R/many-dirs.tsv" "$R/many-one.tsv"
ONLY='^(sft_r|scp_r|rsync_a|tar_ssh)$' RESULTS=$R/many-dirs.tsv "$here/peers.sh" dirs
# the same onto tmpfs: the protocol's cost without ext4's file creation
ONLY='^(sft_r|scp_r|rsync_a|tar_ssh)$' RESULTS=$R/many-dirs.tsv "$here/peers.sh" dirs-tmpfs
ONLY='^(sft|sft_off)$' LO_DATASETS=C.tar RESULTS=$R/many-one.tsv "$here/peers.sh" lo-up loopback
for f in many-dirs many-one; do
    RESULTS=$R/$f.tsv "$here/peers.sh" table 2>/dev/null | sed -n '/== transfers/,/^$/p'
done
"$here/peers.sh" down >/dev/null 2>&1 || true
# the files against one file of the same bytes, both directions, tmpfs and a fresh ext4
"$here/files-vs-one.sh"
