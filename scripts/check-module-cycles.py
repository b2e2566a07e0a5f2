#!/usr/bin/env python3
"""Fails when modules of the crate import each other in a cycle.

Reads every `src/**/*.rs` (binaries under `src/bin` are separate crates and
are skipped), finds the crate paths each file names (`crate::a::b`,
`super::x`, `self::x`, and `use` lists of them), and builds, for every
parent module, the graph of its child modules: an edge A -> B when code in A
(or below it) names B (or something below it). A cycle in any of these
graphs (two siblings that name each other, directly or through others) is
printed and the script exits 1. Test modules (`#[cfg(test)]` to the end of
a file) are ignored: tests may reach anywhere.

Usage: scripts/check-module-cycles.py [src-dir] [--graph]
(--graph also prints the crate's top-level module graph.)
"""
import os
import re
import sys
from collections import defaultdict

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
GRAPH = "--graph" in sys.argv[1:]
SRC = ARGS[0] if ARGS else os.path.join(os.path.dirname(__file__), "..", "src")
SRC = os.path.normpath(SRC)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    cut = re.search(r"#\[cfg\(test\)\]", text)
    return text[: cut.start()] if cut else text


def expand_use(body):
    """`a::{b, c::{d}}` -> ["a::b", "a::c::d"]."""
    body = body.strip()
    out = []
    depth, start, i = 0, 0, 0
    m = re.match(r"^([\w:]*?)\{(.*)\}$", body, flags=re.S)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    parts, cur = [], ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    for p in parts:
        p = p.strip()
        if p:
            out.extend(prefix + q for q in expand_use(p))
    return out


def resolve(mod, path):
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    base = list(mod)
    while segs and segs[0] in ("super", "self"):
        if segs[0] == "super":
            base = base[:-1]
        segs = segs[1:]
    return base + segs


def main():
    files = []
    for root, _, names in os.walk(SRC):
        if os.path.relpath(root, SRC).split(os.sep)[0] == "bin":
            continue
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    modules = {tuple(module_of(f)) for f in files}
    edges = defaultdict(set)  # parent -> {(a, b)}
    for f in files:
        mod = module_of(f)
        text = strip(open(f, encoding="utf-8").read())
        paths = []
        for u in re.findall(r"\buse\s+([^;]+);", text):
            paths += expand_use(re.sub(r"\s+", "", u))
        paths += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
        for p in paths:
            target = resolve(mod, p.split(" as ")[0])
            if not target:
                continue
            # The longest module prefix of the target.
            while target and tuple(target) not in modules:
                target = target[:-1]
            if not target:
                continue
            # The first level where mod and target part: siblings there.
            i = 0
            while i < len(mod) and i < len(target) and mod[i] == target[i]:
                i += 1
            if i < len(mod) and i < len(target):
                edges[tuple(mod[:i])].add((mod[i], target[i]))
    if GRAPH:
        top = defaultdict(set)
        for a, b in edges.get((), ()):
            top[a].add(b)
        for a in sorted(top):
            print(f"{a} -> {', '.join(sorted(top[a]))}")
    cycles = []
    for parent, es in sorted(edges.items()):
        graph = defaultdict(set)
        for a, b in es:
            graph[a].add(b)
        for scc in sccs(graph):
            if len(scc) > 1:
                cycles.append(("::".join(parent) or "crate", sorted(scc)))
    for parent, scc in cycles:
        print(f"cycle in {parent}: {' <-> '.join(scc)}")
    if cycles:
        sys.exit(1)
    print("no import cycles between modules")


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            out.append(comp)

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


if __name__ == "__main__":
    main()
