"""Writes an MNIST-style IDX dataset (e.g. Fashion-MNIST) out as an image folder in
torchvision's ImageFolder layout: OUT/train/<class>/<index>.<ext> and OUT/test/<class>/...

Each 28x28 grayscale image is saved as RGB (the gray value in all three channels) by default,
so the folder exercises the RGB path end to end; `--gray` keeps one channel.

    "$(experiments/images/venv.sh)/bin/python" experiments/images/idx_to_folder.py \
        --idx ~/.cache/compress/datasets/fashion-mnist --out target/fashion-rgb-png
"""

import argparse
import gzip
import os
import struct

import numpy as np
from PIL import Image

FASHION = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read(path):
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            with (gzip.open if candidate.endswith(".gz") else open)(candidate, "rb") as f:
                return f.read()
    raise SystemExit(f"missing {path}(.gz)")


def images(path):
    raw = read(path)
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    assert magic == 2051, f"{path}: not an IDX image file"
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)


def labels(path):
    raw = read(path)
    magic, n = struct.unpack(">II", raw[:8])
    assert magic == 2049, f"{path}: not an IDX label file"
    return np.frombuffer(raw, np.uint8, offset=8)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idx", required=True, help="folder holding the four IDX files")
    p.add_argument("--out", required=True, help="the image folder to write")
    p.add_argument("--format", choices=["png", "jpeg"], default="png")
    p.add_argument("--gray", action="store_true", help="one channel instead of RGB")
    p.add_argument("--names", choices=["fashion", "digits"], default="fashion")
    args = p.parse_args()
    names = FASHION if args.names == "fashion" else [str(i) for i in range(10)]
    ext = "png" if args.format == "png" else "jpg"
    for split, stem in [("train", "train"), ("test", "t10k")]:
        xs = images(os.path.join(args.idx, f"{stem}-images-idx3-ubyte"))
        ys = labels(os.path.join(args.idx, f"{stem}-labels-idx1-ubyte"))
        for name in names:
            os.makedirs(os.path.join(args.out, split, name), exist_ok=True)
        for i, (x, y) in enumerate(zip(xs, ys)):
            image = Image.fromarray(x, "L")
            if not args.gray:
                image = image.convert("RGB")
            # Zero-padded names keep the folder's sorted order the IDX order within a class.
            path = os.path.join(args.out, split, names[y], f"{i:05d}.{ext}")
            if args.format == "png":
                image.save(path)
            else:
                image.save(path, quality=95)
        print(f"{split}: {len(ys)} images")


if __name__ == "__main__":
    main()
