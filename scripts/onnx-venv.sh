#!/usr/bin/env bash
# Prepares the project's own Python environment for checking ONNX exports (never the global
# Python): target/onnx-venv with `onnx` (its checker) and `onnxruntime` (the CPU runtime
# teams deploy on), pinned so every machine checks against the same runtime. Created on first
# use; prints the environment's folder.
#   scripts/onnx-venv.sh                                # prepare, print the folder
#   "$(scripts/onnx-venv.sh)/bin/python" scripts/onnx_check.py model.onnx
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/onnx-venv"
packages=(onnx==1.23.2 onnxruntime==1.32.0 numpy pillow)
if ! "$venv/bin/python" -c "import onnx, onnxruntime, numpy, PIL" >/dev/null 2>&1; then
    mkdir -p "$root/target"
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" >&2; then
        echo "error: python3 -m venv failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" >&2
fi
echo "$venv"
