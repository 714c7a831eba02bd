#!/usr/bin/env python3
"""File-level call graph of object files, from their symbol tables (nm), and its cycles.

    scripts/callgraph.py [--allow A:B ...] OBJ...

An edge A -> B means A.o uses a function or object that B.o defines. Prints every
strongly connected component of more than one file (a cycle), except cycles made only
of allowed edges' endpoints; exits 1 when there is one. Used by `make analyze`.
"""
import subprocess
import sys
from pathlib import Path


def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], capture_output=True, text=True, check=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if l.strip()}
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True, check=True).stdout
    used = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, used


def sccs(nodes, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main(argv):
    allow = set()
    objs = []
    it = iter(argv)
    for a in it:
        if a == "--allow":
            src, dst = next(it).split(":")
            allow.add((src, dst))
        else:
            objs.append(a)
    names = {o: Path(o).stem for o in objs}
    table = {names[o]: symbols(o) for o in objs}
    owner = {}
    for name, (defined, _) in table.items():
        for s in defined:
            owner[s] = name
    edges = {}
    for name, (_, used) in table.items():
        for s in used:
            dst = owner.get(s)
            if dst and dst != name and (name, dst) not in allow:
                edges.setdefault(name, set()).add(dst)
    bad = [c for c in sccs(sorted(table), edges) if len(c) > 1]
    for c in bad:
        members = set(c)
        pairs = sorted("%s -> %s" % (a, b) for a in members for b in edges.get(a, ()) if b in members)
        print("cycle: %s\n  %s" % (", ".join(sorted(c)), "\n  ".join(pairs)))
    if not bad:
        print("call graph: %d files, no cycles" % len(table))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
