#!/bin/sh
# Interleaved batch-1 latency of run folders: every folder benched once per round, three
# rounds, so a parent and its pruned child see the same machine state; prints each round's
# end-to-end p50 (ms), then the median of the rounds per folder.
#
#   experiments/pruning/bench.sh runs/vgg-teacher/HASH runs/prune-vgg/HASH ...
set -eu
cd "$(dirname "$0")/../.."
[ -x target/debug/train ] || cargo build -p train
out=$(mktemp)
for round in 1 2 3; do
  for run in "$@"; do
    p50=$(target/debug/train bench "$run" --images 1000 --warmup 100 | awk '$1 == "1" {print $3}')
    echo "$round $run $p50" | tee -a "$out"
  done
done
echo "median of the rounds' p50 (ms):"
for run in "$@"; do
  grep " $run " "$out" | awk '{print $3}' | sort -n | sed -n 2p | sed "s|^|  $run |"
done
rm -f "$out"
