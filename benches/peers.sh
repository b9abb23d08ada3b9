#!/usr/bin/env bash
# sft side by side with scp and curl+nginx, interleaved in one run by ../shared/bench/peers.sh
# (so the ratios share the machine's drift). Needs root. Not part of the test suite.
#
#   benches/peers.sh                                  # install data conf lo-up loopback down table
#   benches/peers.sh loopback table                   # just the loopback matrix, then the table
#   ONLY='^(sft|rsync_zstd)$' benches/peers.sh ns-100m down table
#
# Knobs are those of peers.sh (REPS, BENCH_DIR, LO_DATASETS, ...); ONLY defaults to sft, scp with
# AES-128-GCM and curl+nginx.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
PEERS=${PEERS:-$repo/../shared/bench/peers.sh}
[[ -f $PEERS ]] || { echo "peers.sh not found at $PEERS (set PEERS=...)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
export SFT=${SFT:-${CARGO_TARGET_DIR:-$repo/target}/release/sft}
export EXTRA_CASES=$here/peers-sft.sh
export BENCH_DIR=${BENCH_DIR:-/srv/sft-bench}   # readable by nginx (www-data), no world-writable parent (sshd)
export ONLY=${ONLY:-'^(sft|scp_aes128gcm|curl)$'}
(($#)) || set -- install data conf lo-up loopback down table
exec bash "$PEERS" "$@"
