"""The ONNX export table (experiments/onnx/README.md): each stage's run exported with
`train export --format onnx --verify --time` (ONNX Runtime on the whole test split beside our
evaluation of the same file, then its latency on 1 thread) and measured by `train bench
--threads 1` in the same sitting, interleaved, ROUNDS rounds (medians reported).

    target/onnx-venv/bin/python experiments/onnx/table.py [ROUNDS]

Run from the repository root with scripts/onnx-venv.sh's Python (the stages are trained first
if missing: `cargo run -p train -- CONFIG` for each config below, about 10 minutes in all).
"""

import json
import os
import re
import statistics
import subprocess
import sys

STAGES = [
    ("LeNet-5 teacher", "configs/teacher.toml"),
    ("LeNet-5 pruned", "configs/prune.toml"),
    ("LeNet-300-100 sparse", "configs/sparse.toml"),
    ("LeNet-5 8-bit QAT", "configs/qat.toml"),
    ("LeNet-5 4-bit QAT", "configs/qat-4bit.toml"),
    ("LeNet-5 float16", "configs/fp16.toml"),
]
TRAIN = ["cargo", "run", "-q", "-p", "train", "--"]


def sh(args):
    out = subprocess.run(TRAIN + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def run_folder(config):
    sh([config, "--plain"])
    return re.search(r"results in (\S+?)\)?;?$", sh(["check", config]).splitlines()[0]).group(1)


def number(text, pattern):
    return float(re.search(pattern, text).group(1))


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs = [(name, run_folder(config)) for name, config in STAGES]
    results = {name: {"ort": [], "bench": []} for name, _ in runs}
    for _ in range(rounds):
        for name, run in runs:
            out = sh(["export", run, "--format", "onnx", "--force", "--verify", "--time"])
            results[name]["ort"].append(out)
            sh(["bench", run, "--threads", "1", "--images", "500", "--warmup", "50", "--batch", "32"])
            with open(os.path.join(run, "summary.json")) as f:
                results[name]["bench"].append(json.load(f)["bench"])
    print("| model | ours: accuracy | ONNX Runtime: accuracy | top-1 agreement | largest logit difference "
          "| .onnx bytes | our file bytes | ours: batch-1 p50 ms (forward) | ONNX Runtime: batch-1 p50 ms "
          "| ours: batch 32 images/s | ONNX Runtime: batch 32 images/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, _ in runs:
        first = results[name]["ort"][0]
        med = statistics.median
        ort_p50 = med(number(o, r"batch-1 p50 ([\d.]+) ms") for o in results[name]["ort"])
        ort_ips = med(number(o, r"batch 32 (\d+) images/s") for o in results[name]["ort"])
        benches = results[name]["bench"]
        p50 = med(b["batch1"]["p50_ms"] for b in benches)
        forward = med(b["batch1"]["phase_mean_ms"][2] for b in benches)
        ips = med(b["images_per_s_batch_n"] for b in benches)
        wrote = re.search(r"wrote \S+ \((\d+) bytes\) from (\S+) \((\d+) bytes\)", first)
        ours = number(first, r"ours ([\d.]+)%")
        theirs = number(first, r"accuracy ([\d.]+)%")
        agreement = number(first, r"agreement ([\d.]+)%")
        difference = number(first, r"logit difference ([\d.e+-]+)")
        file = os.path.basename(wrote.group(2))
        print(
            f"| {name} ({file}) | {ours:.2f}% | {theirs:.2f}% | {agreement:.2f}% | {difference:.1e} "
            f"| {int(wrote.group(1)):,} | {int(wrote.group(3)):,} "
            f"| {p50:.3f} ({forward:.3f}) | {ort_p50:.3f} | {ips:,.0f} | {ort_ips:,.0f} |"
        )


if __name__ == "__main__":
    main()
