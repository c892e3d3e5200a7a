#!/usr/bin/env python3
"""The shape of the house: lines per crate, module cycles inside each crate, and the longest
functions. Usage: `python3 scripts/house.py [ROOT] [--over N]` (ROOT defaults to the repository
this script is in; N to 80). Read-only; prints a report.

- Lines: every line of every `.rs` file under `crates/<crate>/` (tests included).
- Module cycles: module `a` uses module `b` when `a`'s file names `crate::b` (or `super::b`
  from a top-level module); a cycle is a strongly connected component of more than one module.
  Test code (`#[cfg(test)]` onwards, `tests.rs`) and comments are left out: tests may reach
  anywhere, and a doc link is not a use.
- Functions: `fn` items of non-test code, from their signature's first line to the closing
  brace at the same indentation (the layout `cargo fmt` writes).
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?fn\s+(\w+)")
USE = re.compile(r"\b(?:crate|super)::(\w+)")


def non_test(text: str) -> str:
    return text.split("#[cfg(test)]")[0]


def code(text: str) -> str:
    """`text` without its `//` comments (doc links are not uses)."""
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def crate_modules(src: Path) -> dict:
    """Top-level module name -> non-test source text (a folder module's files joined)."""
    mods = {}
    for path in sorted(src.rglob("*.rs")):
        if path.name == "tests.rs":
            continue
        rel = path.relative_to(src)
        name = rel.parts[0].removesuffix(".rs")
        if name in ("lib", "main"):
            continue
        mods[name] = mods.get(name, "") + code(non_test(path.read_text()))
    return mods


def cycles(mods: dict) -> list:
    graph = {m: {d for d in USE.findall(t) if d in mods and d != m} for m, t in mods.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def functions(path: Path):
    lines = non_test(path.read_text()).splitlines()
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m or line.rstrip().endswith(";"):
            continue
        indent = m.group(1)
        for j in range(i, len(lines)):
            if lines[j] == indent + "}" or (j == i and line.rstrip().endswith("}")):
                yield m.group(6), i + 1, j - i + 1
                break


def main():
    args = sys.argv[1:]
    over = 80
    if "--over" in args:
        k = args.index("--over")
        over = int(args[k + 1])
        del args[k : k + 2]
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    crates = sorted(p for p in (root / "crates").iterdir() if (p / "Cargo.toml").exists())
    counts = {c.name: sum(len(f.read_text().splitlines()) for f in c.rglob("*.rs")) for c in crates}
    total = sum(counts.values())
    print(f"lines per crate ({total} in all):")
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:10} {n:6}  {100 * n / total:4.1f}%")
    print("module cycles:")
    found = False
    for c in crates:
        for comp in cycles(crate_modules(c / "src")):
            found = True
            print(f"  {c.name}: {' <-> '.join(comp)}")
    if not found:
        print("  none")
    long = []
    for c in crates:
        for f in sorted((c / "src").rglob("*.rs")):
            if f.name == "tests.rs":
                continue
            for name, line, n in functions(f):
                if n > over:
                    long.append((n, f"{f.relative_to(root)}:{line}", name))
    long.sort(reverse=True)
    print(f"functions over {over} lines: {len(long)}")
    for n, where, name in long:
        print(f"  {n:4}  {name}  ({where})")


if __name__ == "__main__":
    main()
