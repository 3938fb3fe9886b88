"""Imports run one way: sweep -> codegen -> diffaccel (the CLI and workflows).

`sweep` never imports `codegen` or `diffaccel`; `codegen` never imports `diffaccel`,
torch, Ray or diffusers; and no two modules import each other at module level (a
circle), counting only the imports that run when a module loads (not those inside
functions, which is how the CLI loads its commands lazily).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sweep", "codegen", "diffaccel")
HEAVY = ("torch", "ray", "diffusers")


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))}


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules `path` imports (every import, or only those run at module level)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = ast.walk(tree) if not top_level_only else _module_level(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from sweep import bounds`
    return out


def _module_level(tree: ast.Module):
    """Statements that run on import: the module body, its if/try blocks, not functions
    and not `if TYPE_CHECKING:`."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("pkg, forbidden", [
    ("sweep", ("codegen", "diffaccel")),
    ("codegen", ("diffaccel", *HEAVY)),
])
def test_imports_run_one_way(pkg, forbidden):
    bad = sorted(f"{name} imports {imp}" for name, path in modules().items() if _top(name) == pkg
                 for imp in imports(path, top_level_only=False) if _top(imp) in forbidden)
    assert not bad, bad


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Circles of `graph` found by a depth-first search for back edges."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, trail: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append([*trail[trail.index(m):], m])
            elif m not in state:
                visit(m, [*trail, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return cycles


def test_no_module_level_circle():
    mods = modules()
    graph = {name: {imp for imp in imports(path, top_level_only=True) if imp in mods and imp != name}
             for name, path in mods.items()}
    assert graph["codegen.tasks"] and graph["sweep.driver"]  # the graph holds the package's edges
    assert not find_cycles(graph)


def test_importing_codegen_loads_no_torch_ray_or_diffusers():
    code = ("import sys, importlib, pkgutil, codegen\n"
            "for m in pkgutil.iter_modules(codegen.__path__):\n"
            "    importlib.import_module('codegen.' + m.name)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The parser sees an import inside a function (one way) but not as module level (circle)."""
    f = tmp_path / "m.py"
    f.write_text("import os\nif TYPE_CHECKING:\n    import codegen.x\n"
                 "try:\n    from sweep import bounds\nexcept ImportError:\n    pass\n"
                 "def f():\n    import torch\n")
    assert imports(f, top_level_only=True) == {"os", "sweep", "sweep.bounds"}
    assert imports(f, top_level_only=False) == {"os", "codegen.x", "sweep", "sweep.bounds", "torch"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
