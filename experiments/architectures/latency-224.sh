#!/usr/bin/env bash
# ResNet-18 and MobileNetV2 at 224x224, before and after pruning to half their MACs: batch-1
# forward latency (1 thread, medians) in the project and in PyTorch eager, side by side and
# interleaved (project, then PyTorch, model by model; ROUNDS rounds). The PyTorch networks are
# rebuilt from the project's own model files (benches/pytorch/architectures.py), so both sides
# run the same architecture at the same pruned widths. Run from the repository root.
#   experiments/architectures/latency-224.sh            # 27 minutes on 2 cores (runs trained)
#   ROUNDS=1 experiments/architectures/latency-224.sh   # half that
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-2}"
runs="${RUNS:-20}"
python="$(benches/pytorch/venv.sh)/bin/python"
[ -d target/fashion-rgb-png ] || experiments/images/run.sh
cargo build -q -p train
train=target/debug/train
out="$(mktemp -d /tmp/latency-224.XXXXXX)"
echo "results in $out/results.jsonl" >&2

# The run folder a config's results live in (trained first when missing, parents included).
run_of() {
    "$train" "experiments/architectures/$1.toml" --plain > "$out/$1.train.log" 2>&1 \
        || { cat "$out/$1.train.log" >&2; exit 1; }
    "$train" check "experiments/architectures/$1.toml" | sed -n 's/.*results in \(runs\/[^)]*\)).*/\1/p'
}

# MODELS="resnet18-224 resnet18-224-pruned" times a subset.
read -r -a models <<< "${MODELS:-resnet18-224 resnet18-224-pruned mobilenet-224 mobilenet-224-pruned}"
declare -A dirs
for m in "${models[@]}"; do dirs[$m]="$(run_of "$m")"; done

for round in $(seq 1 "$rounds"); do
    for m in "${models[@]}"; do
        run="${dirs[$m]}"
        ours="$("$train" profile "$run" --runs "$runs" --threads 1 --trace "$out/$m.trace.json" \
            | sed -n 's/.*whole forward (no taps) \([0-9.]*\) ms.*/\1/p')"
        macs="$(python3 -c "import json; print(json.load(open('$run/summary.json'))['macs'])")"
        echo "{\"model\": \"$m\", \"round\": $round, \"framework\": \"project\", \"forward_ms_p50\": $ours, \"macs\": $macs}" \
            | tee -a "$out/results.jsonl"
        "$python" benches/pytorch/architectures.py "$run/model.bpk" --runs "$runs" \
            | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(model='$m', round=$round); print(json.dumps(d))" \
            | tee -a "$out/results.jsonl"
    done
done

python3 - "$out/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def p50(model, project):
    return statistics.median(r["forward_ms_p50"] for r in rows
                             if r["model"] == model and (r["framework"] == "project") == project)
macs = {r["model"]: r["macs"] for r in rows if "macs" in r}
print("| model | MACs / sample | project p50 ms | PyTorch eager p50 ms | PyTorch / project |")
print("|---|---|---|---|---|")
for m in macs:
    ours, theirs = p50(m, True), p50(m, False)
    print(f"| {m} | {macs[m]:,} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x |")
for base in [m for m in ["resnet18-224", "mobilenet-224"] if m in macs and m + "-pruned" in macs]:
    pruned = base + "-pruned"
    mac_ratio = macs[base] / macs[pruned]
    for label, project in [("project", True), ("PyTorch eager", False)]:
        speedup = p50(base, project) / p50(pruned, project)
        print(f"{pruned} in {label}: {speedup:.2f}x faster for {mac_ratio:.2f}x fewer MACs "
              f"({speedup / mac_ratio:.2f} of the MAC ratio)")
PY
