"""PyTorch eager's side of `benches/conv_train.rs`: ResNet-20's convolutions at batch 128 (or
with `CONV_NET=resnet18` ResNet-18's at batch 32, 224x224), one thread, each timed alone (the forward under `torch.no_grad()`, then the forward with both
gradients), medians of 5 rounds in milliseconds, with each layer's count in the network and
their time together.

    taskset -c 0 "$(benches/pytorch/venv.sh)/bin/python" benches/pytorch/conv_layers.py
    taskset -c 0 cargo test -p kernels --bench conv_train     # the project's side
"""

import os
import statistics
import sys
import time

import torch

ROUNDS = 5
# (c_in, c_out, input size, kernel, stride), count in the network: as benches/conv_train.rs.
RESNET20 = [
    ((3, 16, 32, 3, 1), 1),
    ((16, 16, 32, 3, 1), 6),
    ((16, 32, 32, 3, 2), 1),
    ((16, 32, 32, 1, 2), 1),
    ((32, 32, 16, 3, 1), 5),
    ((32, 64, 16, 3, 2), 1),
    ((32, 64, 16, 1, 2), 1),
    ((64, 64, 8, 3, 1), 5),
]
RESNET18 = [
    ((3, 64, 224, 7, 2), 1),
    ((64, 64, 56, 3, 1), 4),
    ((64, 128, 56, 3, 2), 1),
    ((64, 128, 56, 1, 2), 1),
    ((128, 128, 28, 3, 1), 3),
    ((128, 256, 28, 3, 2), 1),
    ((128, 256, 28, 1, 2), 1),
    ((256, 256, 14, 3, 1), 3),
    ((256, 512, 14, 3, 2), 1),
    ((256, 512, 14, 1, 2), 1),
    ((512, 512, 7, 3, 1), 3),
]
NETS = {"resnet20": ("ResNet-20", 128, RESNET20), "resnet18": ("ResNet-18", 32, RESNET18)}


def per_call_ms(f, calls=3):
    """Milliseconds per call of `f`, after a warm-up."""
    for _ in range(calls // 10 + 1):
        f()
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = os.environ.get("CONV_NET", "resnet20")
    if net not in NETS:
        sys.exit(f"CONV_NET={net}: expected resnet20 or resnet18")
    name, batch, layers = NETS[net]
    print(f"{name}'s convolutions at batch {batch}, 1 thread, medians of {ROUNDS} rounds, ms\n")
    print(f"{'layer (in->out, hxw, k, s)':<26} {'count':>6} {'forward':>9} {'fwd + bwd':>11} {'all of them':>12}")
    total = 0.0
    for (c_in, c_out, h, k, s), count in layers:
        conv = torch.nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        x = torch.randn(batch, c_in, h, h, requires_grad=True)

        def forward():
            with torch.no_grad():
                conv(x)

        def train():
            conv(x).sum().backward()
            x.grad = None
            conv.weight.grad = None

        forwards, trains = [], []
        for _ in range(ROUNDS):
            forwards.append(per_call_ms(forward))
            trains.append(per_call_ms(train))
        f, t = statistics.median(forwards), statistics.median(trains)
        total += t * count
        label = f"{c_in}->{c_out}, {h}x{h}, {k}, {s}"
        print(f"{label:<26} {count:>6} {f:>9.2f} {t:>11.2f} {t * count:>12.1f}")
    print(f"{'all':<26} {'':>6} {'':>9} {'':>11} {total:>12.1f}")


if __name__ == "__main__":
    main()
