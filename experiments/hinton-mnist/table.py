"""Prints the Hinton et al. 2015 comparison tables and draws two plots (SVG, no dependencies).

    python3 experiments/hinton-mnist/table.py --teacher RUN --small-alone RUN [SWEEPS]

RUN: a run folder (runs/NAME/HASH), as `train check CONFIG` prints it; SWEEPS: the sweeps'
folder (default runs/sweeps), holding hinton-student-alone, hinton-student-distilled and
hinton-small-temperature (each a `train sweep` results.csv whose `run` column names the
trials' run folders). Reads each run's summary.json (test errors, training seconds).
Writes students.svg and temperature.svg beside this script.
"""
import argparse
import csv
import json
import math
import os
import statistics

here = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser()
parser.add_argument("--teacher", required=True)
parser.add_argument("--small-alone", required=True)
parser.add_argument("--teacher-b", help="teacher-jitter.toml's run folder")
parser.add_argument("--teacher-b100", help="teacher-jitter-100.toml's run folder")
parser.add_argument(
    "--row", action="append", default=[], metavar="LABEL=RUN",
    help="one more run for the last table (repeatable)",
)
parser.add_argument("sweeps", nargs="?", default="runs/sweeps")
args = parser.parse_args()


def summary(run):
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)


def trials(sweep):
    """(row of results.csv, summary) of each finished trial of a sweep."""
    path = os.path.join(args.sweeps, sweep, "results.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "done"]
    return [(r, summary(r["run"])) for r in rows]


def spread(values):
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def minutes(seconds):
    return f"{seconds / 60:.1f} min"


teacher = summary(args.teacher)
alone = sorted(trials("hinton-student-alone"), key=lambda t: int(t[0]["seed"]))
distilled = sorted(trials("hinton-student-distilled"), key=lambda t: int(t[0]["seed"]))
jittered = sorted(trials("hinton-student-distilled-jitter"), key=lambda t: int(t[0]["seed"]))
alone_jitter = sorted(trials("hinton-student-alone-jitter"), key=lambda t: int(t[0]["seed"]))
from_b = sorted(trials("hinton-student-distilled-b"), key=lambda t: int(t[0]["seed"]))
from_b100 = sorted(trials("hinton-student-distilled-b100"), key=lambda t: int(t[0]["seed"]))
alone_lr002 = sorted(trials("hinton-student-alone-lr002"), key=lambda t: int(t[0]["seed"]))


def optional_run(run):
    if run and os.path.exists(os.path.join(run, "summary.json")):
        return summary(run)
    return None


teacher_b = optional_run(args.teacher_b)
teacher_b100 = optional_run(args.teacher_b100)

print("| model | test errors (of 10,000) | per seed | training time each | paper |")
print("|---|---|---|---|---|")
print(
    f"| teacher 784-1200-1200-10, dropout + jitter + max-norm, {teacher['epochs']} epochs "
    f"| {teacher['test_errors']} | | {minutes(teacher['train_seconds'])} | 67 |"
)
if teacher_b:
    print(
        f"| teacher B 784-1200-1200-10, jitter only, {teacher_b['epochs']} epochs "
        f"| {teacher_b['test_errors']} | | {minutes(teacher_b['train_seconds'])} | |"
    )
if teacher_b100:
    print(
        f"| teacher B, {teacher_b100['epochs']} epochs (teacher-jitter-100.toml) "
        f"| {teacher_b100['test_errors']} | | {minutes(teacher_b100['train_seconds'])} | |"
    )
for name, runs, paper in [
    ("student 784-800-800-10 alone", alone, 146),
    ("student 784-800-800-10 distilled from the teacher, T = 20", distilled, 74),
    ("student alone, 2-pixel jitter", alone_jitter, ""),
    ("student distilled from the teacher, T = 20, jittered transfer set", jittered, ""),
    ("student distilled from teacher B, T = 20, jittered transfer set", from_b, ""),
    ("student alone, lr 0.02", alone_lr002, ""),
    ("student distilled from teacher B 100 epochs, T = 20, cached logits, lr 0.02",
     from_b100, ""),
]:
    errors = [s["test_errors"] for _, s in runs]
    seeds = ", ".join(f"{r['seed']}: {s['test_errors']}" for r, s in runs)
    times = [s["train_seconds"] for _, s in runs]
    time = f"{minutes(statistics.median(times))}" if times else ""
    epochs = f", {runs[0][1]['epochs']} epochs" if runs else ""
    if runs:
        print(f"| {name}{epochs} | {spread(errors)} | {seeds} | {time} | {paper} |")
print()
print("(mean ± sample standard deviation over seeds; training time: median of the runs'")
print("training seconds, without data loading and the final measurements.)")
print()

small_alone = (
    summary(args.small_alone)
    if os.path.exists(os.path.join(args.small_alone, "summary.json"))
    else {"test_errors": "not run"}
)
small = sorted(
    trials("hinton-small-temperature"), key=lambda t: float(t[0]["distill.temperature"])
)
print("| 784-30-30-10 student | temperature | test errors |")
print("|---|---|---|")
print(f"| alone | - | {small_alone['test_errors']} |")
for row, s in small:
    print(f"| distilled | {float(row['distill.temperature']):g} | {s['test_errors']} |")


transfer = trials("hinton-transfer")
if transfer:
    print()
    print("| change to student-distilled.toml (seed 1) | test errors | training time |")
    print("|---|---|---|")
    keys = [k for k in transfer[0][0] if k not in ("trial", "seed", "state") and
            k in ("data.augment.shift_pixels", "distill.temperature", "distill.alpha",
                  "train.optimizer.lr", "train.epochs")]
    for row, s in transfer:
        change = ", ".join(f"{k} = {row[k]}" for k in keys if row[k] != "")
        print(f"| {change or 'none (T = 20, alpha = 0.9, lr 0.05)'} | {s['test_errors']} "
              f"| {minutes(s['train_seconds'])} |")

if args.row:
    print()
    print("| run | test errors | training time |")
    print("|---|---|---|")
    for label, run in (r.split("=", 1) for r in args.row):
        if os.path.exists(os.path.join(run, "summary.json")):
            s = summary(run)
            print(f"| {label} | {s['test_errors']} | {minutes(s['train_seconds'])} |")
        else:
            print(f"| {label} | not run | |")

# --- plots: a minimal SVG writer (no third-party packages) ---------------------------------
W, H, L, R, T, B = 900, 400, 70, 60, 40, 60


def svg(path, title, x_label, y_label, x_ticks, y_range, draw):
    """Writes an SVG with axes; draw(x, y) -> list of SVG elements, x/y map data to pixels."""
    y_lo, y_hi = y_range
    pad = (y_hi - y_lo) * 0.08 or 1
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def y(v):
        return T + (H - T - B) * (1 - (v - y_lo) / (y_hi - y_lo))

    x_lo, x_hi = x_ticks[0][0], x_ticks[-1][0]

    def x(v):
        return L + (W - L - R) * (v - x_lo) / (x_hi - x_lo or 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>',
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle">{x_label}</text>',
        f'<text x="18" y="{(H - B + T) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {(H - B + T) / 2})">{y_label}</text>',
    ]
    step = 10 ** math.floor(math.log10(max(y_hi - y_lo, 1) / 2))
    if (y_hi - y_lo) / step > 10:
        step *= 2
    v = math.ceil(y_lo / step) * step
    while v <= y_hi:
        out.append(f'<line x1="{L}" y1="{y(v):.1f}" x2="{W - R}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        v += step
    for value, label in x_ticks:
        out.append(f'<text x="{x(value):.1f}" y="{H - B + 18}" text-anchor="middle">{label}</text>')
    out += draw(x, y)
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print(f"\nwrote {os.path.relpath(path)}")


def dot(cx, cy, color, r=5):
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{color}" fill-opacity="0.8"/>'


def mark(x1, x2, cy, color, label):
    return (
        f'<line x1="{x1:.1f}" y1="{cy:.1f}" x2="{x2:.1f}" y2="{cy:.1f}" stroke="{color}" '
        f'stroke-dasharray="5,4"/><text x="{x2 + 4:.1f}" y="{cy + 4:.1f}" fill="{color}">'
        f"{label}</text>"
    )


def errs(runs):
    return [s["test_errors"] for _, s in runs]


groups = [
    ("teacher", [teacher["test_errors"]], 67),
    ("alone", errs(alone), 146),
    ("distilled", errs(distilled), 74),
]
if teacher_b:
    groups.insert(1, ("teacher B", [teacher_b["test_errors"]], None))
if teacher_b100:
    groups.insert(2, ("B 100 ep.", [teacher_b100["test_errors"]], None))
for name, runs in [
    ("alone, jit.", alone_jitter),
    ("dist., jit.", jittered),
    ("B, jit.", from_b),
    ("alone .02", alone_lr002),
    ("B100 .02", from_b100),
]:
    if runs:
        groups.append((name, errs(runs), None))
values = [v for _, vs, p in groups for v in vs + ([p] if p else [])]


def students(x, y):
    out = []
    for i, (name, errors, paper) in enumerate(groups):
        for k, e in enumerate(errors):
            out.append(dot(x(i) + (k - (len(errors) - 1) / 2) * 12, y(e), "#1f77b4"))
        if errors:
            m = statistics.mean(errors)
            out.append(
                f'<line x1="{x(i) - 25:.1f}" y1="{y(m):.1f}" x2="{x(i) + 25:.1f}" '
                f'y2="{y(m):.1f}" stroke="#1f77b4" stroke-width="2"/>'
            )
        if paper:
            out.append(mark(x(i) - 30, x(i) + 30, y(paper), "#d62728", f"paper {paper}"))
    return out


svg(
    os.path.join(here, "students.svg"),
    "MNIST test errors, 800-800 students: ours (dots: seeds, bar: mean), paper (dashed)",
    "",
    "test errors of 10,000",
    # Half a slot of room on either side of the first and last groups.
    [(-0.6, "")] + [(i, name) for i, (name, _, _) in enumerate(groups)] + [(len(groups) - 0.4, "")],
    (min(values), max(values)),
    students,
)

if small:
    temps = [float(r["distill.temperature"]) for r, _ in small]
    errs = [s["test_errors"] for _, s in small]

    def temperature(x, y):
        lx = [math.log(t) for t in temps]
        path = " ".join(f"{x(a):.1f},{y(e):.1f}" for a, e in zip(lx, errs))
        out = [
            # The paper's best range for a 30-30 student: T = 2.5 to 4.
            f'<rect x="{x(math.log(2.5)):.1f}" y="{T}" width="{x(math.log(4)) - x(math.log(2.5)):.1f}" '
            f'height="{H - T - B}" fill="#2ca02c" fill-opacity="0.12"/>',
            f'<text x="{x(math.log(3.1)):.1f}" y="{T + 14}" text-anchor="middle" '
            f'fill="#2ca02c">paper: best</text>',
            f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
        ]
        out += [dot(x(a), y(e), "#1f77b4") for a, e in zip(lx, errs)]
        if isinstance(small_alone["test_errors"], int):
            out.append(
                mark(x(lx[0]), x(lx[-1]), y(small_alone["test_errors"]), "#d62728", "alone")
            )
        return out

    svg(
        os.path.join(here, "temperature.svg"),
        "784-30-30-10 student distilled from the teacher: test errors against T",
        "temperature T (log scale)",
        "test errors of 10,000",
        [(math.log(t), f"{t:g}") for t in temps],
        (min(errs + [small_alone["test_errors"]]), max(errs + [small_alone["test_errors"]]))
        if isinstance(small_alone["test_errors"], int)
        else (min(errs), max(errs)),
        temperature,
    )
