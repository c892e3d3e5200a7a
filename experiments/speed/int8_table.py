"""The integer inference table (experiments/speed/README.md): each model's float run and its
8-bit QAT run (input quantized: every layer integer), measured by `train bench --threads 1`
(ours, end to end per call) and exported with `train export --format onnx --verify --time`
(ONNX Runtime on the same file: our QDQ graph for the int8 run, the float graph for the float
run; `session.run` on preprocessed input, 1 thread), interleaved, ROUNDS rounds, medians. Then
the 90%-sparse MLP against its dense parent at batch 1.

    target/onnx-venv/bin/python experiments/speed/int8_table.py [ROUNDS]

Run from the repository root with scripts/onnx-venv.sh's Python (stages are trained first if
missing: `cargo run -p train -- CONFIG` for each config below, about 25 minutes in all).
"""

import json
import os
import re
import statistics
import subprocess
import sys

MODELS = [
    ("LeNet-5", "configs/teacher.toml", "experiments/speed/lenet-qat.toml"),
    ("MLP 1200-1200", "configs/mlp-teacher.toml", "experiments/speed/mlp-qat.toml"),
    ("VGG", "configs/vgg-teacher.toml", "experiments/speed/vgg-qat.toml"),
]
SPARSE = ("configs/mlp-teacher.toml", "experiments/speed/mlp-sparse.toml")
TRAIN = ["cargo", "run", "-q", "-p", "train", "--"]
BENCH = ["--threads", "1", "--images", "1000", "--warmup", "100", "--batch", "32"]


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


def bench(run):
    sh(["bench", run] + BENCH)
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["bench"]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs = {config: run_folder(config) for m in MODELS for config in m[1:]}
    runs[SPARSE[1]] = run_folder(SPARSE[1])
    ours = {config: [] for config in runs}
    ort = {config: [] for m in MODELS for config in m[1:]}
    for _ in range(rounds):
        for config, run in runs.items():
            ours[config].append(bench(run))
            if config in ort:
                ort[config].append(sh(["export", run, "--format", "onnx", "--force", "--verify", "--time"]))
    med = statistics.median

    def mine(config):
        b = ours[config]
        return med(x["batch1"]["p50_ms"] for x in b), med(x["images_per_s_batch_n"] for x in b)

    def theirs(config):
        o = ort[config]
        return (med(number(x, r"batch-1 p50 ([\d.]+) ms") for x in o),
                med(number(x, r"batch 32 (\d+) images/s") for x in o))

    print("| model | | ours fp32 | ours int8 | ONNX Runtime fp32 | ONNX Runtime int8 (our QDQ export) | int8: ours / ONNX Runtime |")
    print("|---|---|---|---|---|---|---|")
    for name, float_config, int_config in MODELS:
        f, i, of, oi = mine(float_config), mine(int_config), theirs(float_config), theirs(int_config)
        print(f"| {name} | batch-1 p50 ms | {f[0]:.3f} | {i[0]:.3f} | {of[0]:.3f} | {oi[0]:.3f} | {oi[0] / i[0]:.2f}x faster |")
        print(f"| | batch 32 images/s | {f[1]:,.0f} | {i[1]:,.0f} | {of[1]:,.0f} | {oi[1]:,.0f} | {i[1] / oi[1]:.2f}x |")
    print()
    print("| int8 run | kernels | accuracy | top-1 agreement with the simulation (10,000 test images) | ONNX Runtime: accuracy, agreement with ours |")
    print("|---|---|---|---|---|")
    for name, _, int_config in MODELS:
        b = ours[int_config][0]
        spec = b["specification"]
        text = ort[int_config][0]
        print(f"| {name} ({runs[int_config]}) | {b['kernels'][1]} | {100 * b['accuracy']:.2f}% "
              f"| {100 * spec['agreeing'] / spec['samples']:.2f}% (largest logit difference "
              f"{spec['largest_logit_difference']:.2g}) | {number(text, r'accuracy ([\d.]+)%'):.2f}%, "
              f"{number(text, r'agreement ([\d.]+)%'):.2f}% |")
    print()
    dense, sparse = mine(SPARSE[0]), mine(SPARSE[1])
    b = ours[SPARSE[1]][0]
    print("| MLP 1200-1200 | batch-1 p50 ms | batch 32 images/s | kernels at batch 1 | accuracy |")
    print("|---|---|---|---|---|")
    print(f"| dense (mlp-teacher) | {dense[0]:.3f} | {dense[1]:,.0f} | {ours[SPARSE[0]][0]['kernels'][0]} "
          f"| {100 * ours[SPARSE[0]][0]['accuracy']:.2f}% |")
    print(f"| 90% sparse (mlp-sparse) | {sparse[0]:.3f} ({dense[0] / sparse[0]:.2f}x faster) | {sparse[1]:,.0f} "
          f"| {b['kernels'][0]} | {100 * b['accuracy']:.2f}% |")


if __name__ == "__main__":
    main()
