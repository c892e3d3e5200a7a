#!/usr/bin/env bash
# The architectures users compress against PyTorch eager on this machine, side by side and
# interleaved (project, then PyTorch, per workload and thread count, ROUNDS times), on random
# inputs of the same shapes (benches/pytorch/reference.py and benches/speed.rs define the same
# networks):
#   - resnet20:    ResNet-20 on 32x32 RGB, batch 128
#   - mobilenetv2: torchvision's MobileNetV2 (width 1.0) on 32x32 RGB, batch 128
#   - resnet18:    torchvision's ResNet-18 on 224x224 RGB, batch 32
# Training: ms per SGD (Nesterov) step, 2 threads (the project's default 2 replicas) and
# 1 thread (both pinned to core 0 with taskset; the project's `threads = 1`, one pool).
# Inference: batch-1 latency (p50) and batch-32 images/s, 1 thread, eval mode.
# ONLY=resnet20 (or several with commas) runs only those. Prints one JSON line per
# measurement and a table of medians at the end. Uses the users' dev build of the speed bench
# (`cargo test -p runner --bench speed` builds it) and benches/pytorch/venv.sh's PyTorch.
#   benches/pytorch/compare_arch.sh              # about 15 minutes on 2 cores
#   ROUNDS=1 ONLY=resnet20 benches/pytorch/compare_arch.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds="${ROUNDS:-2}"
only="${ONLY:-resnet20,mobilenetv2,resnet18}"
python="$(benches/pytorch/venv.sh)/bin/python"
cargo test -q -p runner --bench speed --no-run 2>/dev/null
bench="$(ls -t target/debug/deps/speed-* | grep -v '\.d$' | head -n 1)"
out="$(mktemp -d /tmp/compare-arch.XXXXXX)"
results="$out/results.jsonl"
echo "results in $results" >&2

declare -A name=([resnet20]="ResNet-20" [mobilenetv2]="MobileNetV2" [resnet18]="ResNet-18")
declare -A steps=([resnet20]=12 [mobilenetv2]=12 [resnet18]=4)
declare -A images=([resnet20]=300 [mobilenetv2]=300 [resnet18]=30)

# project WORKLOAD THREADS: one round of the speed bench; the step time of the setup users get
# at that thread count (replicas at 2, the one-thread pool at 1) and, at 1 thread, inference.
project() {
    local log="$out/$1-$2-project.log" setups=replicas pin=()
    if [[ "$2" == 1 ]]; then setups=plain,pooled; pin=(taskset -c 0); fi
    SPEED_ONLY="${name[$1]}" SPEED_SETUPS="$setups" SPEED_ROUNDS=1 "${pin[@]}" "$bench" --bench \
        > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
    python3 - "$log" "$1" "$2" <<'PY' | tee -a "$results"
import json, re, sys
log, workload, threads = sys.argv[1:]
rows = {}
for line in open(log):
    m = re.match(r"\S.*?\s{2,}(train step b\d+ \(ms\)|batch-1 p50 \(us\)|batch-32 images/s)\s+(.*)", line)
    if m:
        # Each setup's value, then ratios ("1.23x") and "-" where a setup has none.
        cells = [t for t in m.group(2).split() if t != "-" and not t.endswith("x")]
        rows[m.group(1).split(" (")[0]] = [float(t) for t in cells]
step = rows["train step b" + re.search(r"b(\d+)", open(log).read()).group(1)]
d = {"workload": workload, "framework": "project", "threads": int(threads),
     "train_step_ms": step[-1]}
if threads == "1":
    d["batch1_p50_us"] = rows["batch-1 p50"][0]
    d["batch32_images_per_second"] = rows["batch-32 images/s"][0]
print(json.dumps(d))
PY
}

pytorch() { # WORKLOAD THREADS
    local pin=()
    if [[ "$2" == 1 ]]; then pin=(taskset -c 0); fi
    "${pin[@]}" "$python" benches/pytorch/reference.py profile "$1" --threads "$2" --no-ops \
        --steps "${steps[$1]}" 2>/dev/null | tail -n 1 | tee -a "$results"
    if [[ "$2" == 1 ]]; then
        "${pin[@]}" "$python" benches/pytorch/reference.py infer "$1" --images "${images[$1]}" \
            --warmup $(( ${images[$1]} / 10 )) --batches 1 --rounds 3 2>/dev/null \
            | tail -n 1 | tee -a "$results"
    fi
}

for round in $(seq 1 "$rounds"); do
    for workload in resnet20 mobilenetv2 resnet18; do
        [[ ",$only," == *",$workload,"* ]] || continue
        for threads in 2 1; do
            project "$workload" "$threads"
            pytorch "$workload" "$threads"
        done
    done
done

python3 - "$results" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
values = collections.defaultdict(list)
for r in rows:
    side = "project" if r["framework"] == "project" else "pytorch"
    for key in ("train_step_ms", "batch1_p50_us", "batch32_images_per_second"):
        if key in r:
            values[(r["workload"], r["threads"], key, side)].append(r[key])
print("\nmedians (each value: runs), speed ratio = how many times faster the project is")
print(f"{'workload':<12} {'measure':<28} {'project':>18} {'PyTorch':>18} {'ratio':>7}")
for workload in ("resnet20", "mobilenetv2", "resnet18"):
    for threads, key, label, higher in [
        (2, "train_step_ms", "train ms/step, 2 threads", False),
        (1, "train_step_ms", "train ms/step, 1 thread", False),
        (1, "batch1_p50_us", "batch-1 p50 us, 1 thread", False),
        (1, "batch32_images_per_second", "batch-32 images/s, 1 thread", True),
    ]:
        ours = values.get((workload, threads, key, "project"))
        theirs = values.get((workload, threads, key, "pytorch"))
        if not ours or not theirs:
            continue
        a, b = statistics.median(ours), statistics.median(theirs)
        ratio = a / b if higher else b / a
        fmt = lambda v: ", ".join(f"{x:.1f}" for x in v)
        print(f"{workload:<12} {label:<28} {fmt(ours):>18} {fmt(theirs):>18} {ratio:>6.2f}x")
PY
