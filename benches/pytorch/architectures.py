"""The project's ResNet and MobileNetV2 model files, rebuilt in PyTorch eager at their own
(possibly pruned) widths, and timed there: the PyTorch side of experiments/architectures'
"At 224x224" table.

Reads one of our model files (`model.bpk`: burnpack, a CBOR header then the tensors), builds the
same network in PyTorch from the spec in the file's metadata and the shapes of its tensors, loads
the weights strictly (every name and shape must match, so the PyTorch network is the file's
architecture, not an approximation of it), and times a batch-1 forward pass at the file's input
size on one thread: the median of `--runs` passes after `--warmup`, under `torch.inference_mode`.

    "$(benches/pytorch/venv.sh)/bin/python" benches/pytorch/architectures.py runs/NAME/HASH/model.bpk

Prints one JSON object: the spec's kind, the parameter count, the median and p95 in ms.
"""

import argparse
import json
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def cbor(data, i=0):
    """One CBOR item from `data` at `i` (the subset burnpack headers use): (value, next i)."""
    head = data[i]
    major, info = head >> 5, head & 31
    i += 1
    if info < 24:
        n = info
    else:
        size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n = int.from_bytes(data[i : i + size], "big")
        i += size
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        raw = bytes(data[i : i + n])
        return (raw if major == 2 else raw.decode()), i + n
    if major == 4:
        items = []
        for _ in range(n):
            item, i = cbor(data, i)
            items.append(item)
        return items, i
    if major == 5:
        table = {}
        for _ in range(n):
            key, i = cbor(data, i)
            table[key], i = cbor(data, i)
        return table, i
    raise ValueError(f"CBOR major type {major} at byte {i - 1} is not one burnpack uses")


def read_burnpack(path):
    """(tensors by name without the model's prefix, metadata): our `.bpk` model file."""
    data = open(path, "rb").read()
    if data[:4] != b"NRUB":
        raise SystemExit(f"error: {path} is not a burnpack model file (model.bpk)")
    (header_len,) = struct.unpack("<I", data[6:10])
    header, _ = cbor(data, 10)
    start = 10 + header_len
    # The data section starts aligned after the header.
    align = 256
    start = (start + align - 1) // align * align
    last = max(t["data_offsets"][1] for t in header["tensors"].values())
    if start + last > len(data):
        raise SystemExit(f"error: {path}: the tensors end past the file ({start + last} > {len(data)})")
    tensors = {}
    for name, t in header["tensors"].items():
        if t["dtype"] != "F32":
            raise SystemExit(f"error: {name} is {t['dtype']}; this reader takes F32 files")
        begin, end = t["data_offsets"]
        values = np.frombuffer(data[start + begin : start + end], dtype="<f4")
        # burn's BatchNorm names its affine parameters gamma and beta.
        short = name.split(".", 1)[1].replace(".gamma", ".weight").replace(".beta", ".bias")
        tensor = torch.from_numpy(values.copy()).reshape(t["shape"])
        # burn stores a linear layer's weight as [in, out], PyTorch as [out, in].
        tensors[short] = tensor.t().contiguous() if tensor.dim() == 2 else tensor
    return tensors, header.get("metadata", {})


class ConvBn(nn.Sequential):
    """A bias-free convolution and its BatchNorm, named `conv` and `bn` as ours are."""

    def __init__(self, c_in, c_out, k, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)


class BasicBlock(nn.Module):
    def __init__(self, c_in, inner, c_out, stride, projection):
        super().__init__()
        self.conv1 = ConvBn(c_in, inner, 3, stride)
        self.conv2 = ConvBn(inner, c_out, 3)
        self.projection = ConvBn(c_in, c_out, 1, stride) if projection else None

    def forward(self, x):
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + (self.projection(x) if self.projection is not None else x))


class ResNet(nn.Module):
    """Our `resnet` kind: stem (torchvision's 7x7/2 + max-pool, or the CIFAR 3x3/1), basic
    blocks with stride 2 at the start of every stage after the first, average pool, fc."""

    def __init__(self, spec, w):
        super().__init__()
        imagenet = spec.get("stem_layout") == "imagenet"
        stem = w["stem.conv.weight"].shape
        self.stem = ConvBn(stem[1], stem[0], 7 if imagenet else 3, 2 if imagenet else 1)
        self.pool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        counts = spec.get("blocks", 1)
        counts = counts if isinstance(counts, list) else [counts] * len(spec["stages"])
        blocks = []
        for s, count in enumerate(counts):
            for b in range(count):
                i = len(blocks)
                c1, c2 = w[f"blocks.{i}.conv1.conv.weight"].shape, w[f"blocks.{i}.conv2.conv.weight"].shape
                stride = 2 if s > 0 and b == 0 else 1
                projection = f"blocks.{i}.projection.conv.weight" in w
                blocks.append(BasicBlock(c1[1], c1[0], c2[0], stride, projection))
        self.blocks = nn.Sequential(*blocks)
        fc = w["fc.weight"].shape
        self.fc = nn.Linear(fc[1], fc[0])

    def forward(self, x):
        x = self.blocks(self.pool(F.relu(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# torchvision's inverted_residual_setting: expansion t, width c, blocks n, first stride s.
MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, c_in, hidden, c_out, stride, expand, residual):
        super().__init__()
        self.expand = ConvBn(c_in, hidden, 1) if expand else None
        self.depthwise = ConvBn(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBn(hidden, c_out, 1)
        self.residual = residual

    def forward(self, x):
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """Our `mobilenet-v2` kind (torchvision's layout): widths from the file's tensors; strides,
    expansions and residual adds from the table at the nominal widths, as torchvision decides
    them."""

    def __init__(self, spec, w):
        super().__init__()
        mult = spec.get("width_mult", 1.0)
        stem = w["stem.conv.weight"].shape
        self.stem = ConvBn(stem[1], stem[0], 3, 2)
        blocks, nominal_in = [], make_divisible(32 * mult)
        for t, c, n, s in MOBILENET_V2:
            nominal_out = make_divisible(c * mult)
            for b in range(n):
                i = len(blocks)
                depthwise = w[f"blocks.{i}.depthwise.conv.weight"].shape
                project = w[f"blocks.{i}.project.conv.weight"].shape
                stride = s if b == 0 else 1
                residual = stride == 1 and nominal_in == nominal_out
                blocks.append(InvertedResidual(project[1] if t == 1 else
                                               w[f"blocks.{i}.expand.conv.weight"].shape[1],
                                               depthwise[0], project[0], stride, t != 1, residual))
                nominal_in = nominal_out
        self.blocks = nn.Sequential(*blocks)
        head = w["head.conv.weight"].shape
        self.head = ConvBn(head[1], head[0], 1)
        fc = w["classifier.weight"].shape
        self.classifier = nn.Linear(fc[1], fc[0])

    def forward(self, x):
        x = F.relu6(self.head(self.blocks(F.relu6(self.stem(x)))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(path):
    tensors, metadata = read_burnpack(path)
    spec = json.loads(metadata["compress.model_spec"])
    prep = json.loads(metadata["compress.preprocessing"])
    kinds = {"resnet": ResNet, "mobilenet-v2": MobileNetV2}
    if spec["kind"] not in kinds:
        raise SystemExit(f"error: {path}: kind {spec['kind']!r}; this script builds {list(kinds)}")
    model = kinds[spec["kind"]](spec, tensors)
    # BatchNorm's step counter is PyTorch's own; everything else must be in the file.
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"error: {path}: names differ: missing {missing}, unexpected {unexpected}")
    return model.eval(), spec, prep


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="one of our model files (model.bpk)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, spec, prep = build(args.model)
    x = torch.randn(1, prep["channels"], prep["height"], prep["width"])
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.runs):
            start = time.perf_counter()
            model(x)
            if i >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(json.dumps({
        "model": args.model, "kind": spec["kind"], "framework": f"pytorch {torch.__version__} eager",
        "threads": args.threads, "input": [prep["channels"], prep["height"], prep["width"]],
        "params": sum(p.numel() for p in model.parameters()),
        "forward_ms_p50": round(statistics.median(times), 3),
        "forward_ms_p95": round(times[int(0.95 * (len(times) - 1))], 3),
    }))


if __name__ == "__main__":
    main()
