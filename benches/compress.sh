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
rm -f "$R/sft-wire.log"
"$here/peers.sh" install data conf
trap '"$here/peers.sh" down >/dev/null 2>&1 || true' EXIT
ONLY='^(sft|sft_off|sft_z3)$' LO_DATASETS="A.bin B.tar" RESULTS=$R/c-lo.tsv "$here/peers.sh" lo-up loopback
ONLY='^(sft|sft_off|sft_z3|rsync_zstd)$' NS2_DATASETS="B256.tar" RESULTS=$R/c-100m.tsv "$here/peers.sh" ns-100m
ONLY='^(sft|sft_off|rsync_zstd|rsync_zstd_t2)$' NS1_DATASETS="B.tar" RESULTS=$R/c-1g.tsv "$here/peers.sh" ns-1g
for f in c-lo c-100m c-1g; do RESULTS=$R/$f.tsv "$here/peers.sh" table 2>/dev/null | sed -n '/== transfers/,/^$/p'; done
echo "== wire bytes reported by sft --stats (median per link, case, direction and file size)"
awk -F'\t' '{ split($4, a, " "); file=a[3]; wire=a[6]; k=$1" "$2" "$3" file="file; n[k]++; w[k]=w[k]" "wire }
    END { for (k in n) { m=split(w[k], v, " "); asort(v); printf "%s wire=%s ratio=%.3f\n", k, v[int((m+1)/2)], substr(k, index(k,"file=")+5)/v[int((m+1)/2)] } }' \
    "$R/sft-wire.log" | sort
echo "== zstd -3 of the same files (whole-file, from peers.sh data)"
cat "$BENCH_DIR/data/sizes.txt"
