#!/usr/bin/env bash
# Reproduces the tables in this folder's README: the teacher, the 800-800 student alone and
# distilled at T = 20 over seeds 1-3, with and without a jittered transfer set (sweeps), the
# 30-30 student alone and distilled at seven temperatures (a sweep), the student alone with
# jitter (a sweep), and a second teacher (jitter, no dropout) with the student distilled from it. Finished runs are reused, so an interrupted run.sh picks up
# where it stopped; then it prints the tables and draws the plots (table.py).
#
#   experiments/hinton-mnist/run.sh                   # flex, the default build
#   TRAIN=path/to/train COMPRESS_DEVICE=libtorch experiments/hinton-mnist/run.sh
#                                                     # a --features tch build on LibTorch
set -euo pipefail
cd "$(dirname "$0")/../.."
train="${TRAIN:-}"
if [ -z "$train" ]; then
    # The same optimised build `cargo run -p train` and `cargo test` use.
    cargo build -p train
    train=target/debug/train
fi
here=experiments/hinton-mnist

"$train" "$here/teacher.toml" --plain
"$train" sweep "$here/sweep-alone.toml"
"$train" sweep "$here/sweep-distilled.toml"
"$train" sweep "$here/sweep-distilled-jitter.toml"
"$train" "$here/small-alone.toml" --plain
"$train" sweep "$here/sweep-small-temperature.toml"
"$train" sweep "$here/sweep-alone-jitter.toml"
# The second teacher (jitter, no dropout) and the student distilled from it, with the jittered
# transfer set (3 seeds) and with cached logits (seed 1).
from_b=(--set seed=1 --set distill.teacher=teacher-jitter.toml)
"$train" "$here/teacher-jitter.toml" --plain
"$train" sweep "$here/sweep-distilled-b.toml"
"$train" "$here/student-distilled.toml" --plain "${from_b[@]}"
# Teacher B trained 100 epochs (70 errors), the student distilled from it with cached logits
# (lr 0.02: at 0.05 it diverges), and the student alone at the same lr; 3 seeds each.
"$train" "$here/teacher-jitter-100.toml" --plain
"$train" sweep "$here/sweep-distilled-b100.toml"
"$train" sweep "$here/sweep-alone-lr002.toml"

folder() { "$train" check "$@" | sed -n 's/.*results in \([^)]*\)).*/\1/p'; }
python3 "$here/table.py" --teacher "$(folder "$here/teacher.toml")" \
    --small-alone "$(folder "$here/small-alone.toml")" \
    --teacher-b "$(folder "$here/teacher-jitter.toml")" \
    --teacher-b100 "$(folder "$here/teacher-jitter-100.toml")" \
    --row "800-800 distilled from teacher B, cached logits (no jitter), seed 1=$(folder "$here/student-distilled.toml" "${from_b[@]}")" \
    runs/sweeps
