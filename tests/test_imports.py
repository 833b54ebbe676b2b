"""Dependencies point one way: a static read of every import statement in the core package.

Imports inside functions count too (a lazy import is still a dependency). The shipped core
(``clip2scene_ros``) must run without the training package, except ``cli/``, whose ``train`` and
``evaluate`` commands load training stages when they run. Core subpackages must not import each
other in a cycle, so each can be read, tested and replaced from the bottom up.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = "clip2scene_ros"
TRAINING = "clip2scene_training"
ROOT = Path(__file__).resolve().parents[1] / CORE
TRAINING_ALLOWED = ("cli",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module a file imports (anywhere in it) and the line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, node.lineno))
            # `from clip2scene_ros import sim` imports the subpackage
            if name == CORE:
                out += [(f"{name}.{a.name}", node.lineno) for a in node.names if not a.name.startswith("_")]
    return out


def _unit(module: str) -> str:
    """The core subpackage (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _core_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_core_never_imports_the_training_package():
    offenders = []
    for path in _core_files():
        if _unit(_module_name(path)) in TRAINING_ALLOWED:
            continue
        for name, line in _imports(path):
            if name == TRAINING or name.startswith(TRAINING + "."):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{line} imports {name}")
    assert not offenders, "the core must not import the training package:\n" + "\n".join(offenders)


def _graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> ["file:line", ...] (imports within a unit are left out)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in _core_files():
        src = _unit(_module_name(path))
        graph.setdefault(src, {})
        for name, line in _imports(path):
            if name != CORE and not name.startswith(CORE + "."):
                continue
            dst = _unit(name)
            if dst and dst != src:
                graph[src].setdefault(dst, []).append(f"{path.relative_to(ROOT.parent)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_core_subpackages_do_not_import_each_other_in_a_cycle():
    graph = _graph()
    cycles = _cycles(graph)
    lines = []
    for comp in cycles:
        lines.append(" <-> ".join(comp))
        for a in comp:
            for b in comp:
                for where in graph[a].get(b, []):
                    lines.append(f"  {a} -> {b}: {where}")
    assert not cycles, "core subpackages import each other in a cycle:\n" + "\n".join(lines)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The analysis itself: imports inside functions and relative imports are found."""
    pkg = tmp_path / CORE / "a"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    mod = pkg / "m.py"
    mod.write_text("def f():\n    from clip2scene_training.x import y\n    from ..b import c\n    from . import d\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / CORE
    try:
        names = [n for n, _ in _imports(mod)]
    finally:
        ROOT = saved
    assert names == ["clip2scene_training.x", f"{CORE}.b", f"{CORE}.a"]
    assert _cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}, "d": {"a": []}}) == [["a", "b", "c"]]
