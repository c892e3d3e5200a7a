"""The integer inference table (experiments/speed/README.md): each model's float run and its
8-bit QAT run (input quantized: every layer integer), measured by `train bench --threads 1`
(ours, end to end per call), exported with `train export --format onnx --verify --time`
(ONNX Runtime on the same file: our QDQ graph for the int8 run, the float graph for the float
run; `session.run` on preprocessed input, 1 thread), and ONNX Runtime's own static int8 of the
float run (ort_static_int8.py), interleaved, ROUNDS rounds, medians. Then the 90%-sparse MLP
against its dense parent at batch 1.

    target/onnx-venv/bin/python experiments/speed/int8_table.py [ROUNDS]

Run from the repository root with scripts/onnx-venv.sh's Python (stages are trained first if
missing: `cargo run -p train -- CONFIG` for each config below, about 25 minutes in all).
"""

import json
import os
import statistics
import sys

MODELS = [
    ("LeNet-5", "configs/teacher.toml", "experiments/speed/lenet-qat.toml", "mnist"),
    ("MLP 1200-1200", "configs/mlp-teacher.toml", "experiments/speed/mlp-qat.toml", "mnist"),
    ("VGG", "configs/vgg-teacher.toml", "experiments/speed/vgg-qat.toml", "fashion-mnist"),
]
SPARSE = ("configs/mlp-teacher.toml", "experiments/speed/mlp-sparse.toml")
BENCH = ["--threads", "1", "--images", "1000", "--warmup", "100", "--batch", "32"]

# The helpers the ONNX table uses: run `train`, find a config's run folder, read a number.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
sys.path.insert(0, os.path.dirname(__file__))
from table import number, run_folder, sh  # noqa: E402
from ort_static_int8 import prepare, time_it  # noqa: E402


def bench(run):
    sh(["bench", run] + BENCH)
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["bench"]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs = {config: run_folder(config) for m in MODELS for config in m[1:3]}
    runs[SPARSE[1]] = run_folder(SPARSE[1])
    ours = {config: [] for config in runs}
    ort = {config: [] for m in MODELS for config in m[1:3]}
    # ONNX Runtime's own static int8 of each float run (prepared once, timed every round).
    static = {m[1]: prepare(m[1], m[3]) for m in MODELS}
    static_times = {config: [] for config in static}
    for _ in range(rounds):
        for config, run in runs.items():
            ours[config].append(bench(run))
            if config in ort:
                ort[config].append(sh(["export", run, "--format", "onnx", "--force", "--verify", "--time"]))
            if config in static:
                path, input_name, test, _ = static[config]
                static_times[config].append(time_it(path, input_name, test))
    med = statistics.median

    def mine(config):
        b = ours[config]
        return med(x["batch1"]["p50_ms"] for x in b), med(x["images_per_s_batch_n"] for x in b)

    def theirs(config):
        o = ort[config]
        return (med(number(x, r"batch-1 p50 ([\d.]+) ms") for x in o),
                med(number(x, r"batch 32 (\d+) images/s") for x in o))

    print("| model | | ours fp32 | ours int8 | ONNX Runtime fp32 | ONNX Runtime int8 (our QDQ export) "
          "| ONNX Runtime static int8 | ours int8 / best ONNX Runtime int8 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, float_config, int_config, _ in MODELS:
        f, i, of, oi = mine(float_config), mine(int_config), theirs(float_config), theirs(int_config)
        st = [med(t[k] for t in static_times[float_config]) for k in (0, 1)]
        best = (min(oi[0], st[0]), max(oi[1], st[1]))
        print(f"| {name} | batch-1 p50 ms | {f[0]:.3f} | {i[0]:.3f} | {of[0]:.3f} | {oi[0]:.3f} "
              f"| {st[0]:.3f} | {best[0] / i[0]:.2f}x faster |")
        print(f"| | batch 32 images/s | {f[1]:,.0f} | {i[1]:,.0f} | {of[1]:,.0f} | {oi[1]:,.0f} "
              f"| {st[1]:,.0f} | {i[1] / best[1]:.2f}x |")
    print()
    print("| int8 run | kernels | accuracy | top-1 agreement with the simulation (10,000 test images) "
          "| ONNX Runtime on our QDQ export: accuracy, agreement with ours | ONNX Runtime static int8: accuracy |")
    print("|---|---|---|---|---|---|")
    for name, float_config, int_config, _ in MODELS:
        b = ours[int_config][0]
        spec = b["specification"]
        text = ort[int_config][0]
        ort_accuracy = number(text, r"accuracy ([\d.]+)%")
        ort_agreement = number(text, r"agreement ([\d.]+)%")
        print(f"| {name} ({runs[int_config]}) | {b['kernels'][1]} | {100 * b['accuracy']:.2f}% "
              f"| {100 * spec['agreeing'] / spec['samples']:.2f}% (largest logit difference "
              f"{spec['largest_logit_difference']:.2g}) | {ort_accuracy:.2f}%, {ort_agreement:.2f}% "
              f"| {100 * static[float_config][3]:.2f}% |")
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
