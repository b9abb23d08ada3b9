#!/usr/bin/env bash
# Compression benchmark (issue 3), in one run so the ratios share the machine's drift:
#  - loopback: 1 GiB random (A.bin) and the Linux kernel tar (B.tar), up and down,
#    sft with --compress auto / off / 3;
#  - 100 Mbit + 20 ms RTT (tbf + delayline between two namespaces this script creates):
#    256 MiB of the kernel tar up, sft auto/off/3 against rsync --compress-choice=zstd;
#  - 1 Gbit (veth + tbf): the kernel tar up, sft auto/off against rsync zstd (1 and 2 threads).
# Then a table of MB/s medians, and the wire bytes sft reported (--stats) next to `zstd -3`.
# Needs root; installs the peers and data (linux-source) through ../shared/bench/peers.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BENCH_DIR=${BENCH_DIR:-/srv/sft-bench} REPS=${REPS:-3}
R=$BENCH_DIR/results
mkdir -p "$R"
rm -f "$R/sft-wire.log" "$R"/c-lo.tsv "$R"/c-100m.tsv "$R"/c-1g.tsv
"$here/peers.sh" install data conf
trap '"$here/peers.sh" down >/dev/null 2>&1 || true' EXIT
ONLY='^(sft|sft_off|sft_z3)$' LO_DATASETS="A.bin B.tar" RESULTS=$R/c-lo.tsv "$here/peers.sh" lo-up loopback
ONLY='^(sft|sft_off|sft_z3|rsync_zstd)$' NS2_DATASETS="B256.tar" RESULTS=$R/c-100m.tsv "$here/peers.sh" ns-100m
ONLY='^(sft|sft_off|rsync_zstd|rsync_zstd_t2)$' NS1_DATASETS="B.tar" RESULTS=$R/c-1g.tsv "$here/peers.sh" ns-1g
for f in c-lo c-100m c-1g; do RESULTS=$R/$f.tsv "$here/peers.sh" table 2>/dev/null | sed -n '/== transfers/,/^$/p'; done
echo "== wire bytes reported by sft --stats (median per link, case, direction and file size)"
# one line per transfer: link case dir file wire; then the median wire per key
awk -F'\t' '{ n=split($4, a, " "); for (i=1;i<=n;i++) { if (a[i]=="file") f=a[i+1]; if (a[i]=="wire") w=a[i+1] }
              print $1" "$2" "$3" file="f, w }' "$R/sft-wire.log" | sort -k1,4 -k5,5n |
    awk '{ k=$1" "$2" "$3" "$4; v[k]=v[k]" "$5; n[k]++ }
         END { for (k in n) { split(v[k], x, " "); m=x[int((n[k]+1)/2)]; f=k; sub(/.*file=/, "", f);
               printf "%s wire=%s ratio=%.3f (n=%d)\n", k, m, f/m, n[k] } }' | sort
echo "== zstd -3 of the same files (whole-file, from peers.sh data)"
cat "$BENCH_DIR/data/sizes.txt"
