"""Sums a `train profile` table by layer kind (block numbers dropped: every block's depthwise
convolution is one row), with each kind's share and MACs per second.

    cargo run -p train -- profile runs/NAME/HASH --runs 10 > profile.txt
    python3 experiments/architectures/profile_by_layer_kind.py profile.txt
"""
import re, sys
rows = {}
total = 0.0
for line in open(sys.argv[1]):
    m = re.match(r"^  (\S+)\s+([0-9.]+)\s+([0-9.]+)%\s+([0-9,]+)\s+([0-9,]+)\s+([0-9.]+)\s+\[", line)
    if not m:
        continue
    name, ms = m.group(1), float(m.group(2))
    macs = int(m.group(4).replace(",", ""))
    key = re.sub(r"^blocks\.\d+\.", "", name)
    key = re.sub(r"^layer\d+\.\d+\.", "", key)
    if re.fullmatch(r"blocks\.\d+", name):
        key = "block output (residual add / ReLU)"
    r = rows.setdefault(key, [0.0, 0, 0])
    r[0] += ms; r[1] += macs; r[2] += 1
    total += ms
for line in open(sys.argv[1]):
    if "whole forward" in line or "training step" in line:
        print("#", line.strip())
print(f"| layers | count | ms | share | MACs | GMAC/s |")
print("|---|---|---|---|---|---|")
for k, (ms, macs, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
    rate = f"{macs / ms / 1e6:.1f}" if macs and ms > 0 else "-"
    print(f"| {k} | {n} | {ms:.2f} | {100 * ms / total:.0f}% | {macs:,} | {rate} |")
