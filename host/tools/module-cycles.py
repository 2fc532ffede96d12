#!/usr/bin/env python3
"""Fails when a module of a crate imports a module that imports it back.

Usage: module-cycles.py SRC_DIR [SRC_DIR ...]   (each a crate's `src/`)

The graph has one node per module file (`a/b.rs` and `a/b/mod.rs` are
`a::b`); an edge `m -> n` for every `crate::n…` path written in `m`
outside comments (`use` lines, paths in code, intra-doc links), where `n`
is the longest module prefix of the path. Edges from a module to its own
ancestors or descendants are left out: a parent declares its children and
children use their parent's items, which is the module tree, not a cycle.
Prints every strongly connected component of more than one module and
exits 1 if there is one.
"""
import re
import sys
from pathlib import Path

PATH = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}\s*;", re.S)


def modules(src: Path) -> dict:
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods["::".join(parts)] = f
    return mods


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Doc comments keep their intra-doc links; plain comments go.
    return "\n".join(l for l in text.splitlines() if not re.match(r"\s*//(?![/!])", l))


def targets(text: str):
    for m in USE_GROUP.finditer(text):
        for item in re.split(r",(?![^{]*\})", m.group(1)):
            head = item.strip().split("::{")[0].strip()
            if head:
                yield head.split("::")
    for m in PATH.finditer(text):
        yield m.group(1).strip(":").split("::")


def related(a: str, b: str) -> bool:
    return a == "" or b == "" or a == b or a.startswith(b + "::") or b.startswith(a + "::")


def graph(src: Path) -> dict:
    mods = modules(src)
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        for parts in targets(strip_comments(f.read_text())):
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in mods:
                    if not related(m, cand):
                        edges[m].add(cand)
                    break
    return edges


def cycles(edges: dict) -> list:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main() -> int:
    failed = False
    for arg in sys.argv[1:]:
        src = Path(arg)
        edges = graph(src)
        found = cycles(edges)
        n = sum(len(e) for e in edges.values())
        if found:
            failed = True
            for comp in found:
                detail = "; ".join(f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp)
                print(f"{src}: import cycle among {{{', '.join(comp)}}}: {detail}")
        else:
            print(f"{src}: {len(edges)} modules, {n} imports, no cycles")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
