"""PyTorch eager reference for the speed comparison of issue 13 (see benches/README.md).

Trains and measures the same workloads as the project, on the same MNIST files (the project's
cache, ~/.cache/compress/datasets/mnist, which `cargo run -p train -- configs/teacher.toml`
fills), with the same preprocessing and recipes:

  train lenet5        configs/teacher.toml: LeNet-5 + BatchNorm (6, 16 channels; 120, 84 fc),
                      batch 64, SGD lr 0.05 momentum 0.9 Nesterov, weight decay 5e-4, cosine
                      schedule with 0.5 warm-up epochs (per step), 8 epochs
  train mlp-teacher   experiments/hinton-mnist/teacher.toml: 784-1200-1200-10, dropout 0.5
                      (input 0.2), 2-pixel jitter, max-norm 3, batch 128, SGD lr 0.05 momentum
                      0.9 Nesterov, cosine with 1 warm-up epoch, 3 epochs by default here
  train vgg           configs/vgg-teacher.toml on Fashion-MNIST: two stages of two 3x3 convs
                      (32, 32; 64, 64) + BatchNorm + ReLU, 2x2 max-pool after each stage, a
                      256-wide hidden layer with dropout 0.3, batch 128, SGD lr 0.05 momentum
                      0.9 Nesterov, weight decay 5e-4, cosine with 0.5 warm-up epochs, 6 epochs
  profile WORKLOAD    PyTorch's profiler over 50 training steps of a workload (lenet5 at batch
                      64, vgg at 128, resnet20 and mobilenetv2 on random 32x32 RGB at 128,
                      resnet18 on random 224x224 RGB at 32): ms per step unprofiled, then
                      time per op per step, beside the project's per-kernel breakdown
                      (`--steps` fewer steps, `--no-ops` the step time alone)
  infer WORKLOAD      eval-mode forward passes of random inputs on 1 thread: batch-1 p50 and
                      p95 (us) and batch-32 images/s, as `cargo test -p runner --bench speed`
                      measures the project's
  latency             batch-1 end-to-end latency (bytes -> normalised tensor -> forward ->
                      argmax) of LeNet-5 and the 1200-1200 MLP, 1 thread, p50 / p95; and
                      batch-32 inference throughput, 1 thread

Prints one JSON object per result. Run through benches/pytorch/venv.sh's environment:
  "$(benches/pytorch/venv.sh)/bin/python" benches/pytorch/reference.py train lenet5 --threads 2
"""

import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    """An IDX file, or its gzipped form (`path` + ".gz", as Fashion-MNIST is cached)."""
    if not os.path.exists(path):
        with gzip.open(path + ".gz", "rb") as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(dataset="mnist"):
    root = os.path.expanduser(f"~/.cache/compress/datasets/{dataset}")
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    missing = [n for n in names if not any(os.path.exists(os.path.join(root, n + ext))
                                           for ext in ("", ".gz"))]
    if missing:
        config = "configs/vgg-teacher.toml" if dataset == "fashion-mnist" else "configs/teacher.toml"
        raise SystemExit(f"error: {root} lacks {missing}: run `cargo run -p train -- "
                         f"{config}` once, which fetches {dataset} there")
    return [read_idx(os.path.join(root, n)) for n in names]


class LeNet5(nn.Module):
    """The project's lenet5: conv5 (pad 2) + BN + ReLU + pool, conv5 + BN + ReLU + pool, 3 fc."""

    def __init__(self, channels=(6, 16), fc=(120, 84), classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[1])
        self.fc1 = nn.Linear(channels[1] * 25, fc[0])
        self.fc2 = nn.Linear(fc[0], fc[1])
        self.fc3 = nn.Linear(fc[1], classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Vgg(nn.Module):
    """The project's vgg: per stage, 3x3 convs (padding 1, no bias) + BN + ReLU, then a 2x2
    max-pool; a hidden fully connected layer with ReLU and dropout; the classifier."""

    def __init__(self, stages=((32, 32), (64, 64)), fc=(256,), dropout=0.3, classes=10):
        super().__init__()
        layers, c_in, size = [], 1, 28
        for stage in stages:
            for c_out in stage:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
            size //= 2
        self.features = nn.Sequential(*layers)
        widths = [c_in * size * size, *fc, classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.features(x).flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = self.dropout(F.relu(x))
        return x


class BasicBlock(nn.Module):
    """The project's resnet block: two 3x3 conv + BN, a 1x1 conv + BN projection where the
    width or stride changes, ReLU after the residual add."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.projection = None
        if stride != 1 or c_in != c_out:
            self.projection = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        shortcut = x if self.projection is None else self.projection(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet(nn.Module):
    """The project's resnet with stem = 16, stages = [16, 32, 64], blocks = 3 on 32x32 RGB (the
    speed bench's ResNet-20): a 3x3 stem, stride 2 at each later stage, global average pool.
    With `imagenet=True`, torchvision's 7x7 stride-2 stem and 3x3 stride-2 max-pool
    (`stem_layout = "imagenet"`)."""

    def __init__(self, stages=(16, 32, 64), blocks=3, classes=10, stem=16, imagenet=False):
        super().__init__()
        if imagenet:
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(stem), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(stem), nn.ReLU())
        layers, c_in = [], stem
        for s, width in enumerate(stages):
            for b in range(blocks):
                layers.append(BasicBlock(c_in, width, 2 if s > 0 and b == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def resnet18():
    """The project's resnet with stem = 64, stem_layout = "imagenet", stages = [64, 128, 256,
    512], blocks = 2: torchvision's ResNet-18 (the speed bench's, at 224x224)."""
    return ResNet(stages=(64, 128, 256, 512), blocks=2, stem=64, imagenet=True)


def _divisible(v, divisor=8):
    """torchvision's _make_divisible: `v` rounded to a multiple of 8, never 10% below it."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


class InvertedResidual(nn.Module):
    """MobileNetV2's block as the project's (crates/models/src/mobilenet.rs): a 1x1 expansion
    (not at ratio 1), a 3x3 depthwise convolution, ReLU6 after both, a linear 1x1 projection,
    the input added where stride and width are kept."""

    def __init__(self, c_in, c_out, stride, t):
        super().__init__()
        hidden = c_in * t
        layers = []
        if t != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 at width 1.0, as the project's `kind = "mobilenet-v2"`: a
    3x3 stride-2 stem, 17 inverted residual blocks, a 1x1 head to 1280, global average pool,
    dropout 0.2 and the classifier (here on 32x32 RGB, as the speed bench runs it)."""

    STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width=1.0, classes=10):
        super().__init__()
        c_in = _divisible(32 * width)
        layers = [nn.Conv2d(3, c_in, 3, 2, 1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU6()]
        for t, c, n, s in self.STAGES:
            c_out = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        head = _divisible(1280 * max(width, 1.0))
        layers += [nn.Conv2d(c_in, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))


class Mlp(nn.Module):
    """The project's mlp: input dropout, hidden layers with ReLU and dropout, classifier."""

    def __init__(self, hidden=(1200, 1200), dropout=0.5, input_dropout=0.2):
        super().__init__()
        widths = [784, *hidden, 10]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.input_dropout = nn.Dropout(input_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.input_dropout(x.flatten(1))
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = self.dropout(F.relu(x))
        return x


RECIPES = {
    "lenet5": dict(model=LeNet5, batch=64, epochs=8, lr=0.05, wd=5e-4, warmup=0.5,
                   shift=0, max_norm=None),
    "mlp-teacher": dict(model=Mlp, batch=128, epochs=3, lr=0.05, wd=0.0, warmup=1.0,
                        shift=2, max_norm=3.0),
    "vgg": dict(model=Vgg, batch=128, epochs=6, lr=0.05, wd=5e-4, warmup=0.5, shift=0,
                max_norm=None, dataset="fashion-mnist"),
    # Timed on random 32x32 RGB batches by `profile` only, as `cargo test -p runner --bench
    # speed` times the project's.
    "resnet20": dict(model=ResNet, batch=128, wd=5e-4, input=(3, 32, 32), dataset=None),
    "mobilenetv2": dict(model=MobileNetV2, batch=128, wd=5e-4, input=(3, 32, 32),
                        dataset=None),
    "resnet18": dict(model=resnet18, batch=32, wd=5e-4, input=(3, 224, 224), dataset=None),
}


def learning_rate(base, step, steps_per_epoch, epochs, warmup_epochs):
    """The project's schedule (crates/runner/src/schedule.rs): linear warm-up, then cosine."""
    warmup = round(warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base * (step + 1) / warmup
    total = max(epochs * steps_per_epoch - warmup, 1)
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / total))


def jitter(images, shift, rng):
    """Shifts each [n, 28, 28] image by up to `shift` pixels in x and y, zero fill."""
    n, h, w = images.shape
    out = np.zeros_like(images)
    dy = rng.integers(-shift, shift + 1, n)
    dx = rng.integers(-shift, shift + 1, n)
    for i in range(n):
        y0, x0 = dy[i], dx[i]
        out[i, max(y0, 0):h + min(y0, 0), max(x0, 0):w + min(x0, 0)] = \
            images[i, max(-y0, 0):h + min(-y0, 0), max(-x0, 0):w + min(-x0, 0)]
    return out


def train(args):
    recipe = RECIPES[args.workload]
    if recipe.get("dataset", "mnist") is None:
        raise SystemExit(f"error: {args.workload} is timed by `profile` only (random batches)")
    epochs = args.epochs or recipe["epochs"]
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_x, train_y, test_x, test_y = load_mnist(recipe.get("dataset", "mnist"))
    mean = float((train_x / 255.0).mean())
    std = float((train_x / 255.0).std())
    model = recipe["model"]()
    optim = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=0.9, nesterov=True,
                            weight_decay=recipe["wd"])
    batch = recipe["batch"]
    steps_per_epoch = math.ceil(len(train_x) / batch)
    labels = torch.from_numpy(train_y.astype(np.int64))
    step, train_seconds, start = 0, 0.0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        images = train_x if recipe["shift"] == 0 else jitter(train_x, recipe["shift"], rng)
        inputs = (torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) / std
        inputs = inputs.unsqueeze(1)
        order = torch.from_numpy(rng.permutation(len(train_x)))
        epoch_start = time.perf_counter()
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            for group in optim.param_groups:
                group["lr"] = learning_rate(recipe["lr"], step, steps_per_epoch, epochs,
                                            recipe["warmup"])
            loss = F.cross_entropy(model(inputs[idx]), labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if recipe["max_norm"] is not None:
                with torch.no_grad():
                    for layer in model.layers:
                        # PyTorch's weight is [out, in]: a unit's incoming weights are a row.
                        norms = layer.weight.norm(dim=1, keepdim=True)
                        layer.weight.mul_((recipe["max_norm"] / norms).clamp(max=1.0))
            step += 1
        train_seconds += time.perf_counter() - epoch_start
    errors = evaluate(model, test_x, test_y, mean, std)
    print(json.dumps({
        "workload": args.workload, "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(), "epochs": epochs, "seed": args.seed,
        "train_samples_per_second": round(epochs * len(train_x) / train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 2),
        "test_errors": errors, "test_accuracy": round(1 - errors / len(test_x), 4),
    }), flush=True)


@torch.inference_mode()
def evaluate(model, images, labels, mean, std):
    model.eval()
    x = ((torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) / std).unsqueeze(1)
    predicted = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return int((predicted != torch.from_numpy(labels.astype(np.int64))).sum())


def profile(args):
    recipe = RECIPES[args.workload]
    torch.manual_seed(1)
    model = recipe["model"]()
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                            weight_decay=recipe["wd"])
    batch = recipe["batch"]
    x = torch.randn(batch, *recipe.get("input", (1, 28, 28)))
    y = torch.arange(batch) % 10

    def step():
        loss = F.cross_entropy(model(x), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    steps = args.steps
    for _ in range(max(2, min(20, steps // 2))):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    plain_ms = (time.perf_counter() - start) * 1e3 / steps
    if args.no_ops:
        print(json.dumps({
            "workload": args.workload, "framework": f"pytorch {torch.__version__}",
            "threads": torch.get_num_threads(), "batch": batch, "steps": steps,
            "train_step_ms": round(plain_ms, 2),
        }), flush=True)
        return
    from torch.profiler import ProfilerActivity, profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, {args.workload} "
          f"batch {batch}: {plain_ms:.3f} ms per training step (unprofiled); "
          f"self CPU time per step by op:")
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    for e in rows[:args.top]:
        print(f"  {e.key:<48} {e.self_cpu_time_total / steps / 1e3:8.3f} ms "
              f"{100 * e.self_cpu_time_total / total:5.1f}%")


@torch.inference_mode()
def infer(args):
    """A workload's model in eval mode on random inputs, 1 thread: each batch-1 forward pass
    with its argmax read back (p50, p95), and batch-32 passes (images/s), as the project's
    speed bench times `Inference::classify`."""
    recipe = RECIPES[args.workload]
    torch.manual_seed(1)
    model = recipe["model"]()
    model.eval()
    shape = recipe.get("input", (1, 28, 28))
    one, batch = torch.randn(1, *shape), torch.randn(32, *shape)
    times = []
    for i in range(args.warmup + args.images):
        start = time.perf_counter()
        model(one).argmax(1).tolist()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    rounds = []
    model(batch)
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.batches):
            model(batch).argmax(1).tolist()
        rounds.append(args.batches * 32 / (time.perf_counter() - start))
    print(json.dumps({
        "workload": args.workload, "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(), "images": args.images,
        "batch1_p50_us": round(times[len(times) // 2] * 1e6, 1),
        "batch1_p95_us": round(times[int(len(times) * 0.95)] * 1e6, 1),
        "batch32_images_per_second": round(sorted(rounds)[len(rounds) // 2], 1),
    }), flush=True)


@torch.inference_mode()
def latency(args):
    """End to end per call at batch 1 and batch 32, as `train bench` measures both: from the
    test set's raw bytes to normalised pixels, the forward pass, the softmax and each row's
    class."""
    _, _, test_x, _ = load_mnist()
    mean, std = 0.1307, 0.3081

    def classify(model, raw):
        x = (torch.from_numpy(raw.astype(np.float32)) / 255.0 - mean) / std
        probs = torch.softmax(model(x.view(-1, 1, 28, 28)), 1)
        return probs.argmax(1).tolist()

    for name, model in [("lenet5", LeNet5()), ("mlp-1200-1200", Mlp())]:
        model.eval()
        times = []
        for i in range(args.warmup + args.images):
            start = time.perf_counter()
            classify(model, test_x[i % len(test_x)])
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
        times.sort()
        batch = 32
        batches = len(test_x) // batch
        for b in range(args.batches // 5):  # warm-up
            classify(model, test_x[b * batch:(b + 1) * batch])
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for b in range(args.batches):
                first = (b % batches) * batch
                classify(model, test_x[first:first + batch])
            rounds.append(args.batches * batch / (time.perf_counter() - start))
        print(json.dumps({
            "model": name, "framework": f"pytorch {torch.__version__}",
            "threads": torch.get_num_threads(), "images": args.images,
            "batch1_p50_ms": round(times[len(times) // 2] * 1e3, 4),
            "batch1_p95_ms": round(times[int(len(times) * 0.95)] * 1e3, 4),
            "batch32_images_per_second": round(sorted(rounds)[len(rounds) // 2], 1),
        }), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a workload, print samples/s and test errors")
    t.add_argument("workload", choices=sorted(RECIPES))
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--epochs", type=int, default=0, help="0: the recipe's")
    t.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("profile", help="per-op profile of training steps")
    p.add_argument("workload", choices=sorted(RECIPES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--steps", type=int, default=50, help="timed steps (and profiled ones)")
    p.add_argument("--no-ops", action="store_true", help="the step time alone, as JSON")
    inf = sub.add_parser("infer", help="batch-1 latency and batch-32 throughput of a "
                                       "workload's model on random inputs, 1 thread")
    inf.add_argument("workload", choices=sorted(RECIPES))
    inf.add_argument("--images", type=int, default=300)
    inf.add_argument("--warmup", type=int, default=30)
    inf.add_argument("--batches", type=int, default=5)
    inf.add_argument("--rounds", type=int, default=5)
    lat = sub.add_parser("latency", help="batch-1 latency and batch-32 throughput, 1 thread")
    lat.add_argument("--images", type=int, default=1000)
    lat.add_argument("--warmup", type=int, default=100)
    lat.add_argument("--batches", type=int, default=50)
    lat.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.command == "train":
        torch.set_num_threads(args.threads)
        train(args)
    elif args.command == "profile":
        torch.set_num_threads(args.threads)
        profile(args)
    elif args.command == "infer":
        torch.set_num_threads(1)
        infer(args)
    else:
        torch.set_num_threads(1)
        latency(args)


if __name__ == "__main__":
    main()
