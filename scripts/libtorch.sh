#!/usr/bin/env bash
# Prepares a CPU-only LibTorch 2.9.0 (what burn 0.22.1's `tch` feature links: burn-tch -> tch
# 0.22.0 -> torch-sys 0.22.0) from the Python registry, and prints its folder. Use it as:
#
#   export LIBTORCH="$(scripts/libtorch.sh)"
#   export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
#   cargo run -p train --features tch -- configs/teacher.toml --set device=libtorch
#
# Why this route (see ARCHITECTURE.md, "Backends"): the registry's torch==2.9.0 is the CUDA
# build, there is no CPU-only Linux wheel, and tch's own download site is not reachable from
# every machine. The CPU half of that wheel is a complete LibTorch: its headers, libc10,
# libtorch_cpu and libgomp. libtorch_cpu also names libcudart and libcupti (profiler hooks that
# are never called on the CPU), so those two small wheels are unpacked beside it. The real
# libtorch.so is left out on purpose: it needs libtorch_cuda.so (1 GB, plus 2 GB of nvidia
# wheels), and torch-sys links libtorch_cuda whenever it sees it; an empty libtorch.so
# satisfies the `-ltorch` torch-sys asks for, since every symbol lives in libtorch_cpu.
#
# On a GPU node with a working `import torch`, skip this: LIBTORCH_USE_PYTORCH=1 is the
# ordinary route (README, "GPU clusters").
#
# Wheels are cached in $COMPRESS_CACHE (default ~/.cache/compress) and verified by SHA-256;
# the prepared folder is built beside its final name and renamed into place when complete, so
# an interrupted run leaves nothing that looks ready.
set -euo pipefail

cache="${COMPRESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/compress}"
dest="$cache/libtorch-2.9.0-cpu"
if [ -f "$dest/build-version" ] && [ -f "$dest/lib/libtorch_cpu.so" ]; then
    echo "$dest"
    exit 0
fi

wheels=(
    "torch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    "nvidia_cuda_runtime_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    "nvidia_cuda_cupti_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
)
specs=("torch==2.9.0" "nvidia-cuda-runtime-cu12==12.8.90" "nvidia-cuda-cupti-cu12==12.8.90")
# As published on the registry.
sha256s=(
    "51de31219c97c51cf4bf2be94d622e3deb5dcc526c6dc00e97c17eaec0fc1d67"
    "adade8dcbd0edf427b7204d480d6066d33902cab2a4707dcfc48a2d0fd44ab90"
    "ea0cb07ebda26bb9b29ba82cda34849e73c166c18162d3913575b0c9db9a6182"
)

for tool in python3 cc; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: scripts/libtorch.sh needs $tool (Debian/Ubuntu: apt-get install python3 gcc)" >&2
        exit 1
    fi
done

mkdir -p "$cache/wheels"
missing=()
for i in "${!wheels[@]}"; do
    [ -f "$cache/wheels/${wheels[$i]}" ] || missing+=("${specs[$i]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/libtorch.sh: downloading ${missing[*]} (about 900 MB) into $cache/wheels" >&2
    # pip runs from its own throwaway environment: nothing is installed into any Python.
    venv="$(mktemp -d)"
    trap 'rm -rf "$venv"' EXIT
    python3 -m venv "$venv" >&2
    # CPython 3.11's tag is asked for explicitly: the wheel's contents do not depend on it, and
    # this way any python3 can fetch it.
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$cache/wheels" "${missing[@]}" >&2
fi

for i in "${!wheels[@]}"; do
    if ! echo "${sha256s[$i]}  $cache/wheels/${wheels[$i]}" | sha256sum --check --status; then
        rm -f "$cache/wheels/${wheels[$i]}"
        echo "error: $cache/wheels/${wheels[$i]} does not match its published SHA-256; removed it, rerun to fetch it again" >&2
        exit 1
    fi
done

work="$(mktemp -d "$cache/libtorch-2.9.0-cpu.partial.XXXXXX")"
trap 'rm -rf "$work" ${venv:+"$venv"}' EXIT
python3 - "$cache/wheels" "$work" "${wheels[@]}" <<'EOF'
import os, sys, zipfile

wheels_dir, out, torch_wheel, cudart_wheel, cupti_wheel = sys.argv[1:6]
lib = os.path.join(out, "lib")
os.makedirs(lib)

def extract(wheel, keep):
    """Unpacks the members `keep(name)` maps to a destination path (or None to skip)."""
    with zipfile.ZipFile(os.path.join(wheels_dir, wheel)) as z:
        bad = z.testzip()
        if bad is not None:
            sys.exit(f"error: {wheel}: member {bad} is corrupt; delete the wheel and rerun")
        for info in z.infolist():
            dest = keep(info.filename)
            if dest is None or info.is_dir():
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)

cpu_libs = {"libc10.so", "libtorch_cpu.so", "libgomp.so.1"}
def torch_member(name):
    if name.startswith("torch/include/"):
        return os.path.join(out, name[len("torch/"):])
    if name.startswith("torch/lib/") and os.path.basename(name) in cpu_libs:
        return os.path.join(lib, os.path.basename(name))
    return None
extract(torch_wheel, torch_member)
extract(cudart_wheel, lambda n: os.path.join(lib, "libcudart.so.12")
        if n == "nvidia/cuda_runtime/lib/libcudart.so.12" else None)
extract(cupti_wheel, lambda n: os.path.join(lib, "libcupti.so.12")
        if n == "nvidia/cuda_cupti/lib/libcupti.so.12" else None)
for needed in sorted(cpu_libs | {"libcudart.so.12", "libcupti.so.12"}):
    if not os.path.exists(os.path.join(lib, needed)):
        sys.exit(f"error: {needed} was not found in the wheels; delete {wheels_dir} and rerun")
EOF
# torch-sys links `-lgomp` by name.
ln -s libgomp.so.1 "$work/lib/libgomp.so"
# The empty libtorch.so (see the header).
echo "" | cc -shared -fPIC -x c -o "$work/lib/libtorch.so" -
# torch-sys compares this with the version it was written for.
printf '2.9.0' >"$work/build-version"
rm -rf "$dest"
mv "$work" "$dest"
echo "$dest"
