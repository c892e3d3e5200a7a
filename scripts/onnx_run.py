"""Checks an exported ONNX model and runs it in ONNX Runtime on the CPU (the project's tests
and experiments run this with scripts/onnx-venv.sh's Python).

    onnx_run.py MODEL                          # onnx.checker (full check) only
    onnx_run.py MODEL INPUT OUTPUT [--threads N] [--batch N] [--time] [--disable-optimizer NAME]...

INPUT holds the samples back to back in the graph input's type and layout (float32 NCHW, or
uint8 NHWC for a raw-pixel graph), little endian; OUTPUT receives the logits as float32.
Prints one JSON line: the opset, the input's name, type and shape, and the samples run. With
--time, also the forward pass's latency on these inputs (one session, `--threads` threads):
the median of 500 calls of one image after 50 untimed, and images/s over 30 calls of 32.
"""

import argparse
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def timing(session, name, x):
    """Batch-1 median latency (ms) and batch-32 throughput (images/s) of `session` on `x`."""
    def call(i, n):
        at = (i * n) % max(1, len(x) - n + 1)
        batch = x[at : at + n]
        start = time.perf_counter()
        session.run(None, {name: batch})
        return time.perf_counter() - start

    for i in range(50):
        call(i, 1)
    single = sorted(call(i, 1) for i in range(500))
    for i in range(3):
        call(i, 32)
    batched = [call(i, 32) for i in range(30)]
    return {
        "batch1_p50_ms": 1e3 * single[len(single) // 2],
        "batch32_images_per_s": 32 * len(batched) / sum(batched),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("input", nargs="?")
    parser.add_argument("output", nargs="?")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--time", action="store_true")
    # An ONNX Runtime graph optimiser to leave out (e.g. WeightBiasQuantization), repeatable.
    parser.add_argument("--disable-optimizer", action="append", default=[])
    args = parser.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    graph_input = model.graph.input[0]
    tensor_type = graph_input.type.tensor_type
    dims = [d.dim_value for d in tensor_type.shape.dim][1:]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    info = {
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "input": graph_input.name,
        "dtype": str(np.dtype(dtype)),
        "shape": dims,
        "metadata": {p.key: p.value for p in model.metadata_props},
    }
    if args.input:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            args.model,
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=args.disable_optimizer,
        )
        x = np.fromfile(args.input, dtype=dtype).reshape([-1] + dims)
        outputs = [
            session.run(None, {graph_input.name: x[i : i + args.batch]})[0]
            for i in range(0, len(x), args.batch)
        ]
        np.concatenate(outputs).astype("<f4").tofile(args.output)
        info["samples"] = len(x)
        if args.time:
            info.update(timing(session, graph_input.name, x))
    json.dump(info, sys.stdout)
    print()


if __name__ == "__main__":
    main()
