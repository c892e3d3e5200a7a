"""Prints the Hinton et al. 2015 comparison tables from the run folders under RUNS (argv[1]).

Reads each run's summary.json (test errors) and config.resolved.toml (seed, temperature).
"""
import glob
import json
import statistics
import sys
import tomllib

runs = sys.argv[1] if len(sys.argv) > 1 else "runs"


def load(name):
    out = []
    for path in sorted(glob.glob(f"{runs}/{name}/*/summary.json")):
        folder = path.rsplit("/", 1)[0]
        with open(path) as f:
            summary = json.load(f)
        with open(f"{folder}/config.resolved.toml", "rb") as f:
            config = tomllib.load(f)
        out.append((config, summary))
    return out


def errors(rows):
    """(seed, test errors) of each run, by seed."""
    return sorted((c["seed"], s["test_errors"]) for c, s in rows)


def mean_std(pairs):
    if not pairs:
        return "not run"
    values = [e for _, e in pairs]
    if len(values) == 1:
        return f"{values[0]}"
    seeds = ", ".join(f"seed {s}: {e}" for s, e in pairs)
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({seeds})"


teacher = load("hinton-teacher")
alone = load("hinton-student-alone")
distilled = [r for r in load("hinton-student-distilled") if r[0]["distill"]["temperature"] == 20.0]

print("| model | test errors (of 10,000), ours | paper |")
print("|---|---|---|")
print(f"| teacher 784-1200-1200-10, dropout + jitter | {mean_std(errors(teacher))} | 67 |")
print(f"| student 784-800-800-10 alone | {mean_std(errors(alone))} | 146 |")
print(f"| student 784-800-800-10 distilled, T = 20 | {mean_std(errors(distilled))} | 74 |")
print()
print("| 784-30-30-10 student | temperature | test errors |")
print("|---|---|---|")
for config, summary in load("hinton-small-alone"):
    print(f"| alone | - | {summary['test_errors']} |")
small = load("hinton-small-distilled")
small.sort(key=lambda r: r[0]["distill"]["temperature"])
for config, summary in small:
    print(f"| distilled | {config['distill']['temperature']:g} | {summary['test_errors']} |")
