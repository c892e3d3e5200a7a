"""ONNX Runtime's own int8 on our float models: each float run exported with `train export
--format onnx`, prepared by ONNX Runtime's `quant_pre_process` (shape inference, graph
optimisation: BatchNorm folded into the convolutions) and quantized by its static quantizer
(QDQ, per-channel weights, int8
weights and uint8 activations, calibrated on the first 512 training images, as issue 30's table
made its "ONNX Runtime int8" column from PyTorch models), then its accuracy on the 10,000 test
images and its latency on 1 thread (batch-1 median of 500 calls, batch-32 images/s over 30
calls: scripts/onnx_run.py's timing), ROUNDS rounds, medians.

    target/onnx-venv/bin/python experiments/speed/ort_static_int8.py [ROUNDS]

Run from the repository root with scripts/onnx-venv.sh's Python, after int8_table.py (which
trains the float runs).
"""

import gzip
import os
import re
import statistics
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from onnx_run import timing  # noqa: E402

MODELS = [
    ("LeNet-5", "configs/teacher.toml", "mnist"),
    ("MLP 1200-1200", "configs/mlp-teacher.toml", "mnist"),
    ("VGG", "configs/vgg-teacher.toml", "fashion-mnist"),
]
CACHE = os.path.expanduser("~/.cache/compress/datasets")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "onnx"))
from table import sh  # noqa: E402


def idx(dataset, name):
    """An IDX file of the project's dataset cache (gzipped for some datasets, not others)."""
    path = os.path.join(CACHE, dataset, name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    else:
        with gzip.open(path + ".gz") as f:
            data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def normalised(images, meta):
    mean = float(meta["mean"].strip("[]").split(",")[0])
    std = float(meta["std"].strip("[]").split(",")[0])
    x = images.astype(np.float32)[:, None, :, :] / 255.0
    return ((x - mean) / std).astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, name, x):
        self.batches = iter([{name: x[i: i + 32]} for i in range(0, len(x), 32)])

    def get_next(self):
        return next(self.batches, None)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def prepare(config, dataset):
    """The float run of `config` exported, prepared and quantized by ONNX Runtime: the int8
    graph's path, its input name, the test images as it reads them, and its accuracy."""
    run = re.search(r"results in (\S+?)\)?;?$", sh(["check", config]).splitlines()[0]).group(1)
    fp32 = os.path.join(run, "model.fp32-for-ort.onnx")
    prepared = os.path.join(run, "model.fp32-prepared.onnx")
    int8 = os.path.join(run, "model.ort-static-int8.onnx")
    sh(["export", run, "--format", "onnx", "--force", "--out", fp32])
    model = onnx.load(fp32)
    meta = {p.key: p.value for p in model.metadata_props}
    input_name = model.graph.input[0].name
    train = normalised(idx(dataset, "train-images-idx3-ubyte")[:512], meta)
    test = normalised(idx(dataset, "t10k-images-idx3-ubyte"), meta)
    labels = idx(dataset, "t10k-labels-idx1-ubyte")
    quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
    quantize_static(prepared, int8, Reader(input_name, train), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    s = session(int8)
    logits = np.concatenate([s.run(None, {input_name: test[i: i + 500]})[0]
                             for i in range(0, len(test), 500)])
    return int8, input_name, test, float((logits.argmax(1) == labels).mean())


def time_it(path, input_name, test):
    """Batch-1 p50 (ms) and batch-32 images/s of the graph at `path` on 1 thread."""
    t = timing(session(path), input_name, test)
    return t["batch1_p50_ms"], t["batch32_images_per_s"]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print("| model | ONNX Runtime static int8: accuracy | batch-1 p50 ms | batch 32 images/s |")
    print("|---|---|---|---|")
    for name, config, dataset in MODELS:
        path, input_name, test, accuracy = prepare(config, dataset)
        times = [time_it(path, input_name, test) for _ in range(rounds)]
        p50 = statistics.median(t[0] for t in times)
        ips = statistics.median(t[1] for t in times)
        print(f"| {name} ({os.path.dirname(path)}) | {100 * accuracy:.2f}% | {p50:.3f} | {ips:,.0f} |")


if __name__ == "__main__":
    main()
