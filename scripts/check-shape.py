#!/usr/bin/env python3
"""Checks the shape of the crate's source: no import cycle between the top-level modules
of `src/`, and no function longer than 150 lines in `src/`.

A top-level module is `src/NAME.rs` with everything under `src/NAME/`; module A uses B
when A's code names `crate::B` (in a `use` or a path). `src/lib.rs` and `src/main.rs`
declare the modules and are not counted. Functions are counted from the line of `fn` to
its closing brace; `#[cfg(test)]` modules and test files (`tests.rs`, `*_tests.rs`) are
not counted. Generated code is not under `src/` (it is included from `OUT_DIR`).

Known long functions are listed in `scripts/shape-allow.txt` (`path::function` per
line); an entry that is no longer long is reported so the list shrinks.

Prints every finding, then `N passed, M failed` (one result per check).
Usage: scripts/check-shape.py [ROOT]   (ROOT defaults to the repository)
"""
import os
import re
import sys
from pathlib import Path

MAX_LINES = 150

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
src = root / "src"
allow_file = Path(__file__).resolve().parent / "shape-allow.txt"


def strip_comments_and_strings(text):
    """Blanks comments, string and char literals (keeping newlines), so braces and
    `crate::` inside them are not counted."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 130]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}'), or a lifetime ('a): only the former
            # is blanked.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def top_module(path):
    rel = path.relative_to(src)
    return rel.parts[0][:-3] if len(rel.parts) == 1 else rel.parts[0]


def is_test_file(path):
    return path.name == "tests.rs" or path.name.endswith("_tests.rs")


def cfg_test_spans(clean):
    """Line spans (start, end) of `#[cfg(test)]` items with a body."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]", clean):
        brace = clean.find("{", m.end())
        semi = clean.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        end = match_brace(clean, brace)
        spans.append((clean.count("\n", 0, m.start()), clean.count("\n", 0, end)))
    return spans


def match_brace(clean, open_at):
    depth = 0
    for j in range(open_at, len(clean)):
        if clean[j] == "{":
            depth += 1
        elif clean[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(clean) - 1


def long_functions(path, clean):
    spans = cfg_test_spans(clean)
    found = []
    for m in re.finditer(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", clean):
        # The body's opening brace: the first `{` after the signature at depth 0 of
        # parentheses and angle-free; a `;` first means a declaration without a body.
        j, paren = m.end(), 0
        while j < len(clean):
            ch = clean[j]
            if ch in "([":
                paren += 1
            elif ch in ")]":
                paren -= 1
            elif ch == ";" and paren == 0:
                j = -1
                break
            elif ch == "{" and paren == 0:
                break
            j += 1
        if j < 0 or j >= len(clean):
            continue
        start = clean.count("\n", 0, m.start())
        end = clean.count("\n", 0, match_brace(clean, j))
        if any(a <= start <= b for a, b in spans):
            continue
        lines = end - start + 1
        if lines > MAX_LINES:
            found.append((m.group(1), lines, start + 1))
    return found


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main():
    files = sorted(p for p in src.rglob("*.rs") if p.name not in ("lib.rs", "main.rs") or p.parent != src)
    modules = {top_module(p) for p in files}
    graph = {m: set() for m in modules}
    uses = {}
    long = []
    for path in files:
        clean = strip_comments_and_strings(path.read_text(encoding="utf-8"))
        here = top_module(path)
        if not is_test_file(path):
            spans = cfg_test_spans(clean)
            for m in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*)", clean):
                line = clean.count("\n", 0, m.start())
                if any(a <= line <= b for a, b in spans):
                    continue
                other = m.group(1)
                if other in modules and other != here:
                    graph[here].add(other)
                    uses.setdefault((here, other), f"{path.relative_to(root)}:{line + 1}")
            # `use crate::{a, b::c}` groups.
            for m in re.finditer(r"\bcrate::\{", clean):
                line = clean.count("\n", 0, m.start())
                if any(a <= line <= b for a, b in spans):
                    continue
                body = clean[m.end():match_brace(clean, m.end() - 1)]
                depth = 0
                for tok in re.finditer(r"[{}]|[a-z_][a-z0-9_]*", body):
                    t = tok.group(0)
                    if t == "{":
                        depth += 1
                    elif t == "}":
                        depth -= 1
                    elif depth == 0 and t in modules and t != here:
                        prev = body[:tok.start()].rstrip()
                        if prev.endswith("::"):
                            continue
                        graph[here].add(t)
                        uses.setdefault((here, t), f"{path.relative_to(root)}:{line + 1}")
            for name, lines, line in long_functions(path, clean):
                long.append((f"{path.relative_to(root)}::{name}", lines, line))

    allowed = set()
    if allow_file.exists():
        for raw in allow_file.read_text(encoding="utf-8").splitlines():
            entry = raw.split("#", 1)[0].strip()
            if entry:
                allowed.add(entry)

    passed = failed = 0
    cycles = find_cycles(graph)
    if cycles:
        failed += 1
        for comp in cycles:
            print(f"import cycle between top-level modules: {', '.join(comp)}")
            for a in comp:
                for b in comp:
                    if (a, b) in uses:
                        print(f"  {a} -> {b} (first at {uses[(a, b)]})")
    else:
        passed += 1
        print(f"no import cycle between the {len(modules)} top-level modules of src/")

    over = [f for f in long if f[0] not in allowed]
    known = [f for f in long if f[0] in allowed]
    stale = sorted(allowed - {f[0] for f in long})
    for name, lines, line in known:
        print(f"known (scripts/shape-allow.txt): {name} is {lines} lines (line {line})")
    for name in stale:
        print(f"scripts/shape-allow.txt lists {name}, which is no longer over {MAX_LINES} lines: remove it")
    if over or stale:
        failed += 1
        for name, lines, line in over:
            print(f"function over {MAX_LINES} lines: {name} is {lines} lines (line {line})")
    else:
        passed += 1
        print(f"no function over {MAX_LINES} lines in src/ (apart from {len(known)} listed)")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
