#!/bin/sh
# The pruning results of the README: every stage (parents are trained first when missing),
# the sensitivity plot, then side-by-side latency of each parent and its pruned child.
set -eu
cd "$(dirname "$0")/../.."
cargo build -p train
T=target/debug/train
for config in prune prune-vgg prune-resnet sparse; do
  $T "configs/$config.toml" --plain
done
$T sensitivity configs/vgg-teacher.toml --plain
folder() { $T check "configs/$1.toml" | sed -n 's/.*results in \(.*\))$/\1/p'; }
experiments/pruning/bench.sh \
  "$(folder vgg-teacher)" "$(folder prune-vgg)" \
  "$(folder teacher)" "$(folder prune)" \
  "$(folder resnet-teacher)" "$(folder prune-resnet)" \
  "$(folder lenet-300-100)" "$(folder sparse)"
