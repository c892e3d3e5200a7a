#!/usr/bin/env bash
# Fashion-MNIST through the image-folder reader, against the same network on the IDX files, and
# the loader's decode throughput. Run from the repository root; see README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
py="$(experiments/images/venv.sh)/bin/python"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/compress/datasets/fashion-mnist"

# The IDX baseline (fetches Fashion-MNIST on first use).
cargo run -p train -- configs/vgg-teacher.toml --plain
# The same images as RGB PNG and JPEG folders.
[ -d target/fashion-rgb-png ] || "$py" experiments/images/idx_to_folder.py --idx "$cache" --out target/fashion-rgb-png
[ -d target/fashion-rgb-jpeg ] || "$py" experiments/images/idx_to_folder.py --idx "$cache" --out target/fashion-rgb-jpeg --format jpeg
# Decode throughput, 1 thread and one per core.
cargo test -p data --bench decode -- target/fashion-rgb-jpeg
cargo test -p data --bench decode -- target/fashion-rgb-png
# The VGG on the PNG folder, held in memory.
cargo run -p train -- experiments/images/vgg-fashion-folder.toml --plain
# Its first epoch streamed from disk (decoded batch by batch on the loader thread).
timeout 200 cargo run -p train -- experiments/images/vgg-fashion-folder.toml --plain \
    --set data.max_decoded_mb=0 --set output.dir=target/runs-streamed || true
