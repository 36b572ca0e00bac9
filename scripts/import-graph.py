#!/usr/bin/env python3
"""A crate's module graph from its `crate::` paths, and a check that it has no cycle.

Usage: scripts/import-graph.py [--cycles-only] [crate src dir, default agent/src]
(`--cycles-only` skips the # Layout order check, for crates whose list is not a stack.)
Prints one line per top-level module with the modules it uses, then `no cycle` or the
cycle found, then whether every arrow points down the `# Layout` list of lib.rs (the
`//! - [`module`]` lines, top to bottom). Exit 1 on a cycle or an upward arrow. A module's submodules count as the module (`model/openai.rs`
is `model`); `lib.rs` is `lib`. Every `crate::x` path counts, in `use` lines or inline,
test modules included.
"""
import pathlib
import re
import sys

args = [a for a in sys.argv[1:] if a != "--cycles-only"]
cycles_only = len(args) < len(sys.argv) - 1
src = pathlib.Path(args[0] if args else "agent/src")
modules = {p.stem if p.parent == src else p.relative_to(src).parts[0]
           for p in src.rglob("*.rs") if p.name != "main.rs"}
modules = {"lib" if m == "lib" else m for m in modules}

def module_of(path):
    rel = path.relative_to(src)
    return "lib" if rel.name == "lib.rs" else rel.parts[0].removesuffix(".rs")

edges = {m: set() for m in modules}
for path in src.rglob("*.rs"):
    if path.name == "main.rs":
        continue
    here = module_of(path)
    text = re.sub(r"//[^\n]*", "", path.read_text())  # comments and docs do not import
    for target in re.findall(r"\bcrate::(\w+)", text):
        target = target if target in modules else "lib"  # `crate::Item` is the root
        if target != here:
            edges[here].add(target)
    # `use crate::{a, b::c}`
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        for target in re.findall(r"(?:^|,)\s*(\w+)", group):
            if target in modules and target != here:
                edges[here].add(target)

for m in sorted(edges, key=lambda m: (-len(edges[m]), m)):
    print(f"{m:12} -> {', '.join(sorted(edges[m])) or '(nothing)'}")

state, stack = {}, []
def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(edges[m]):
        if state.get(n) == "open":
            return stack[stack.index(n):] + [n]
        if n not in state and (cycle := visit(n)):
            return cycle
    stack.pop()
    state[m] = "done"
    return None

for m in sorted(edges):
    if m not in state and (cycle := visit(m)):
        print("cycle: " + " -> ".join(cycle))
        sys.exit(1)
print("no cycle")
if cycles_only:
    sys.exit(0)

layout = ["lib"]
for line in (src / "lib.rs").read_text().splitlines():
    if (hit := re.match(r"//! - \[`(\w+)`\]", line)) and hit.group(1) in modules:
        layout.append(hit.group(1))
missing = sorted(modules - set(layout))
upward = [f"{m} -> {n}" for m in edges for n in edges[m] if layout.index(n) < layout.index(m)] if not missing else []
if missing:
    print(f"not in the # Layout list of lib.rs: {', '.join(missing)}")
elif upward:
    print("arrows up the # Layout list: " + "; ".join(sorted(upward)))
else:
    print("every arrow points down the # Layout list: " + " > ".join(layout))
sys.exit(1 if missing or upward else 0)
