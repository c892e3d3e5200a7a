#!/usr/bin/env bash
# The project against PyTorch eager on this machine, side by side, interleaved (project, then
# PyTorch, then again), on the same data and recipes (benches/pytorch/reference.py says which):
#   - configs/teacher.toml (LeNet-5 + BN, 8 epochs) at 2 threads, ROUNDS runs each
#   - experiments/hinton-mnist/teacher.toml (the 1200-1200 MLP teacher), 3 epochs, 2 threads
#   - configs/vgg-teacher.toml (two stages of 3x3 convs at 32 and 64 channels, Fashion-MNIST,
#     batch 128), 1 epoch, 2 threads
#   - all three again at 1 thread (one run each; VGG_ROUNDS runs of the VGG, default 1)
#   - batch-1 latency (p50, p95) and batch-32 throughput, 1 thread, of LeNet-5 and the MLP
# ONLY=vgg (or lenet5, mlp; several with commas) runs only those workloads' training rows and
# skips the latency rows.
# Prints one JSON line per result and a table at the end. Uses the users' build (`cargo build
# -p train`, the dev profile) and the PyTorch venv of benches/pytorch/venv.sh (created on first
# use, about 4 GB). Each project run trains in a fresh output folder (nothing reused).
#   benches/pytorch/compare.sh            # about 12 minutes on 2 cores
#   ROUNDS=1 benches/pytorch/compare.sh
#   TRAIN=/tmp/old/train ONLY=vgg benches/pytorch/compare.sh  # another build
#   ONLY=vgg ROUNDS=3 VGG_ROUNDS=3 benches/pytorch/compare.sh   # the VGG alone, about 25 minutes
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds="${ROUNDS:-2}"
vgg_rounds="${VGG_ROUNDS:-1}"
only="${ONLY:-lenet5,mlp,vgg}"
want() { [[ ",$only," == *",$1,"* ]]; }
python="$(benches/pytorch/venv.sh)/bin/python"
# TRAIN=path/to/train measures another build of the project (an earlier commit's, say).
if [[ -z "${TRAIN:-}" ]]; then
    cargo build -q -p train
fi
train="${TRAIN:-$root/target/debug/train}"
out="$(mktemp -d /tmp/compare.XXXXXX)"
results="$out/results.jsonl"
echo "results in $results" >&2

project() { # name config threads epochs
    local dir="$out/$1"
    "$train" "$2" --set threads="$3" --set train.epochs="$4" --set output.dir="$dir" \
        > "$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
    local run
    run="$(dirname "$(ls "$dir"/*/*/summary.json)")"
    python3 - "$run" "$1" "$3" <<'PY' | tee -a "$results"
import json, sys
run, name, threads = sys.argv[1:]
s = json.load(open(f"{run}/summary.json"))
print(json.dumps({"workload": name, "framework": "project (" + s["build"] + ")",
    "threads": int(threads), "epochs": s["epochs"],
    "train_samples_per_second": round(s["train_samples_per_s"], 1),
    "wall_seconds": round(s["train_seconds"], 2), "test_errors": s["test_errors"],
    "test_accuracy": round(s["accuracy"], 4), "run": run}))
PY
}

pytorch() { # workload threads epochs name
    "$python" benches/pytorch/reference.py train "$1" --threads "$2" --epochs "$3" \
        | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['workload']='$4'; print(json.dumps(d))" \
        | tee -a "$results"
}

for round in $(seq 1 "$rounds"); do
    if want lenet5; then
        project "lenet5-2t-$round" configs/teacher.toml 2 8
        pytorch lenet5 2 8 "lenet5-2t-$round"
    fi
    if want mlp; then
        project "mlp-2t-$round" experiments/hinton-mnist/teacher.toml 2 3
        pytorch mlp-teacher 2 3 "mlp-2t-$round"
    fi
    if want vgg; then
        project "vgg-2t-$round" configs/vgg-teacher.toml 2 1
        pytorch vgg 2 1 "vgg-2t-$round"
    fi
done
if want lenet5; then
    project lenet5-1t configs/teacher.toml 1 8
    pytorch lenet5 1 8 lenet5-1t
fi
if want mlp; then
    project mlp-1t experiments/hinton-mnist/teacher.toml 1 3
    pytorch mlp-teacher 1 3 mlp-1t
fi
if want vgg; then
    for round in $(seq 1 "$vgg_rounds"); do
        project "vgg-1t-$round" configs/vgg-teacher.toml 1 1
        pytorch vgg 1 1 "vgg-1t-$round"
    done
fi
# The training table: medians per workload and thread count, project against PyTorch.
summary() {
    python3 - "$results" <<'PY'
import collections, json, statistics, sys
rows = collections.defaultdict(lambda: {"project": [], "pytorch": []})
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "workload" not in r:
        continue
    key = (r["workload"].rsplit("-", 1)[0] if r["workload"][-1].isdigit() else r["workload"])
    side = "project" if r["framework"].startswith("project") else "pytorch"
    rows[key][side].append(r["train_samples_per_second"])
print(f"{'workload':<12} {'project samples/s':>18} {'PyTorch samples/s':>18} {'ratio':>6}")
for key, v in rows.items():
    if v["project"] and v["pytorch"]:
        p, t = statistics.median(v["project"]), statistics.median(v["pytorch"])
        runs = f"({len(v['project'])} runs)"
        print(f"{key:<12} {p:>18,.0f} {t:>18,.0f} {p / t:>5.2f}x {runs}")
PY
}
if [[ "$only" != "lenet5,mlp,vgg" ]]; then
    summary
    echo "results in $results" >&2
    exit 0
fi

# Latency of the models trained above (the project's `train bench`, 1 thread, batch-1 and
# batch 32), then PyTorch's.
for name in lenet5-2t-1 mlp-2t-1; do
    run="$(dirname "$(ls "$out/$name"/*/*/summary.json)")"
    "$train" bench "$run" --threads 1 --batch 32 --images 1000 --warmup 100 \
        | tee "$out/bench-$name.txt" >&2
    python3 - "$out/bench-$name.txt" "$name" <<'PY' | tee -a "$results"
import json, re, sys
text = open(sys.argv[1]).read()
def row(prefix):
    for line in text.splitlines():
        if line.strip().startswith(prefix):
            return line.split()
    raise SystemExit(f"no '{prefix}' row in train bench's output:\n{text}")
b1 = row("1 ")
batch32 = re.search(r"([0-9.]+) images/s at batch 32", text)
print(json.dumps({"model": sys.argv[2].split("-2t")[0], "framework": "project", "threads": 1,
    "batch1_p50_ms": float(b1[2]), "batch1_p95_ms": float(b1[3]),
    "batch32_images_per_second": float(batch32.group(1))}))
PY
done
"$python" benches/pytorch/reference.py latency --images 1000 | tee -a "$results"
summary
echo "results in $results" >&2
