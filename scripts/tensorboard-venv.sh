#!/usr/bin/env bash
# Prepares the project's own Python environment for TensorBoard (never the global Python):
# target/tensorboard-venv, created on first use. Prints the environment's folder.
#   scripts/tensorboard-venv.sh                         # prepare, print the folder
#   "$(scripts/tensorboard-venv.sh)/bin/tensorboard" --logdir runs
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/tensorboard-venv"
if ! "$venv/bin/python" -c "import tensorboard" >/dev/null 2>&1; then
    mkdir -p "$root/target"
    if ! python3 -m venv "$venv" >&2; then
        echo "error: python3 -m venv failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard >&2
fi
echo "$venv"
