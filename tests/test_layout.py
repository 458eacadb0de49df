"""The layout is the architecture: no import cycles inside ``pyrovae/``, the layers import only
downwards, and the public API stays importable as documented."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyrovae"

# Bottom to top: a module may import from its own layer and the ones before it, never later ones.
LAYERS = [
    ["core"],
    ["data", "nets"],
    ["models", "guides"],
    ["inference"],
    ["plots"],
    ["runs"],
    ["cli", "__main__", "__init__"],
]


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name ↦ file, for every .py under ``root`` (a package by its __init__)."""
    mods = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module ↦ the package modules it imports, anywhere in its file (deferred imports inside
    functions count too). Importing ``a.b.c`` also runs the ``__init__`` of ``a.b`` (and ``a``),
    so those are edges too, except the importer's own parent packages."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        own = set(_ancestors(name)) | {name}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            for target in targets:
                if target not in mods:
                    continue
                for t in [*_ancestors(target), target]:
                    if t not in own:
                        graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, …, a], or None (depth-first search with colours)."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        colour[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if colour.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if not colour.get(v):
                found = visit(v)
                if found:
                    return found
        stack.pop()
        colour[u] = 2
        return None

    for u in sorted(graph):
        if not colour.get(u):
            found = visit(u)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph(module_files()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import a\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from pkg.sub.a import f\n")
    graph = import_graph(module_files(pkg))
    assert find_cycle(graph) == ["pkg.b", "pkg.sub", "pkg.sub.a", "pkg.b"]
    (pkg / "b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(module_files(pkg))) is None


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: place it")


def test_layers_import_downwards_only():
    mods = module_files()
    upward = [
        f"{m} -> {t}"
        for m, targets in import_graph(mods).items()
        for t in targets
        if t != "pyrovae" and m != "pyrovae" and _layer(t) > _layer(m)
    ]
    assert not upward, "a lower layer imports a higher one: " + "; ".join(sorted(upward))


@pytest.mark.parametrize(
    "name",
    [
        "pyrovae",
        "pyrovae.inference",
        "pyrovae.models",
        "pyrovae.guides",
        "pyrovae.plots",
        "pyrovae.runs",
        "pyrovae.data",
        "pyrovae.nets",
        "pyrovae.cli",
    ],
)
def test_public_names_import(name):
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert not missing
