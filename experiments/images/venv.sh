#!/usr/bin/env bash
# The image experiments' own Python environment (never the global Python): target/images-venv
# with Pillow and NumPy, created on first use. Prints the environment's folder.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/images-venv"
if ! "$venv/bin/python" -c "import PIL, numpy" >/dev/null 2>&1; then
    mkdir -p "$root/target"
    if [ ! -x "$venv/bin/python" ] && ! python3 -m venv "$venv" >&2; then
        echo "error: python3 -m venv failed; install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pillow numpy >&2
fi
echo "$venv"
