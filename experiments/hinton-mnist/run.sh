#!/usr/bin/env bash
# Reproduces the tables in this folder's README: the teacher, the 800-800 student alone and
# distilled at T = 20 over seeds 1-3, and the 30-30 student alone and distilled at several
# temperatures. Finished runs are reused, so an interrupted run.sh picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The same optimised build `cargo run -p train` and `cargo test` use.
cargo build -p train
train=target/debug/train
here=experiments/hinton-mnist

"$train" "$here/teacher.toml" --plain
for seed in 1 2 3; do
    "$train" "$here/student-alone.toml" --plain --set "seed=$seed"
    "$train" "$here/student-distilled.toml" --plain --set "seed=$seed"
done
"$train" "$here/small-alone.toml" --plain
for t in 1 2 5 10 20; do
    "$train" "$here/small-distilled.toml" --plain --set "distill.temperature=$t"
done
python3 "$here/table.py" runs
