"""The package's shape: no import cycle, no module past about 400 lines, every import declared.

Why a test: a cycle or a grab-bag module creeps back one convenient import at
a time, and nothing else fails when it does. These read the source (``ast``),
so function-level imports count too: they are how cycles used to hide.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Repository folder -> the package it installs as (pyproject.toml [tool.setuptools.package-dir]).
PACKAGES = {"osteo_batch": "osteo_batch", "flows": "osteo_batch.flows"}
MAX_LINES = 400


@functools.lru_cache(maxsize=None)
def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in PACKAGES.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            parts = list(p.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = p
    return mods


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (functions included), absolute."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                mod = ".".join(base + ([n.module] if n.module else []))
            else:
                mod = n.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in n.names)  # "from pkg import module"
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def owner(target: str) -> str | None:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for t in _imports(name, path):
            o = owner(t)
            # a module importing its own package's __init__ is Python's doing, not a design edge
            if o and o != name and not name.startswith(o + "."):
                graph[name].add(o)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
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
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_function_level_imports_included():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (each list imports itself round): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_function_level_cycle(tmp_path):
    """The check above can fail: two modules that import each other inside functions are found."""
    g = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(g) == [["a", "b"]]
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from osteo_batch.store import Store\n    from . import sibling\n")
    assert {"osteo_batch.store", "osteo_batch.store.Store", "osteo_batch.x.sibling"} <= _imports("osteo_batch.x.m", src)


def test_the_library_never_imports_prefect_or_the_flows():
    """``osteo_batch`` works without Prefect: only ``flows/`` and the command line may reach it."""
    graph = _graph()
    mods = _modules()
    allowed = ("osteo_batch.flows", "osteo_batch.cli")
    for name, path in mods.items():
        if name.startswith(allowed):
            continue
        assert not any(t.startswith("osteo_batch.flows") for t in graph.get(name, ())), name
        top = {t.split(".")[0] for t in _imports(name, path)}
        assert not top & {"prefect", "prefect_ray"}, f"{name} imports Prefect"


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_over_about_400_lines(name):
    n = len(_modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f"{name} has {n} lines: split it by job"


#: import names many distributions install into (``nvidia.cublas``, ``nvidia.nvimgcodec``, ...)
NAMESPACES = {"nvidia"}


def _declared() -> set[str]:
    """Distribution names pyproject declares (dependencies and the optional ones), normalised."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(doc["project"]["dependencies"])
    for extra in doc["project"].get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


@functools.lru_cache(maxsize=None)
def _distributions() -> dict[str, list[str]]:
    from importlib.metadata import packages_distributions

    return packages_distributions()


def _distribution_of(top: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _distributions().get(top, [])}


def test_every_imported_package_is_declared():
    """Each third-party package the code imports is in pyproject.toml, not left to arrive through another."""
    declared = _declared()
    missing = {}
    for name, path in _modules().items():
        for t in _imports(name, path):
            top = t.split(".")[0]
            if not top or top in sys.stdlib_module_names or top == "osteo_batch":
                continue
            if top in NAMESPACES:  # many distributions share it (torch's CUDA libraries): judge the subpackage
                sub = t.split(".")[1] if "." in t else ""
                if not sub or not any(d.startswith(f"{top}-{sub}") for d in declared):
                    missing.setdefault(t, set()).add(name)
                continue
            dists = _distribution_of(top)
            assert dists, f"{name} imports {top}, which no installed distribution provides"
            if not dists & declared:
                missing.setdefault(top, set()).add(name)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
