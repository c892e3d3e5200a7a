#!/usr/bin/env bash
# Prepares the PyTorch reference's own Python environment (never the global Python):
# target/pytorch-venv with torch 2.15.0 (the Python registry's default, a CUDA build: `import
# torch` on a CPU machine needs its nvidia and cuda-toolkit wheels, so they are installed with
# it, about 4 GB) and numpy. Created on first use; prints the environment's folder.
#   "$(benches/pytorch/venv.sh)/bin/python" benches/pytorch/reference.py --help
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/pytorch-venv"
version="2.15.0"
if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$version')" >/dev/null 2>&1; then
    mkdir -p "$root/target"
    if ! python3 -m venv "$venv" >&2; then
        echo "error: python3 -m venv failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    echo "installing torch==$version and numpy into $venv (first use only; about 4 GB)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$version" numpy >&2
fi
echo "$venv"
