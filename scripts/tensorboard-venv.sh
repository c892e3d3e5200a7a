#!/usr/bin/env bash
# Prepares the project's own Python environment for TensorBoard (never the global Python):
# target/tensorboard-venv, created on first use. Prints the environment's folder.
#   scripts/tensorboard-venv.sh                         # prepare, print the folder
#   "$(scripts/tensorboard-venv.sh)/bin/tensorboard" --logdir runs
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/tensorboard-venv"
# The profile plugin (its Profile tab shows `train profile`'s traces): 2.19.0 loads a
# `<host>.trace.json.gz` and runs without TensorFlow (2.13 needs TensorFlow; 2.24, now xprof,
# reads only XPlane protos). It needs protobuf < 5, which pip chooses with it.
if ! "$venv/bin/python" -c "import tensorboard, tensorboard_plugin_profile" >/dev/null 2>&1; then
    mkdir -p "$root/target"
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" >&2; then
        echo "error: python3 -m venv failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard \
        tensorboard-plugin-profile==2.19.0 >&2
fi
echo "$venv"
