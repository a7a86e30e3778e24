"""The package's layering, read from the source's own imports (every `import`, also the ones
inside functions and under TYPE_CHECKING), so that it stays the way the architecture says:

    cli, studio → evaluation, curation, training, synthesis, ship → inference → bundle → data
    → models → rundir → errors → redact, noise → config

A module may import its own package and any lower layer; never a higher one, never a peer
package in its layer (evaluation must not reach into training's internals: what both need lives
below them), and so no import circle can span two packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "instructune"

# Lowest first; each set is one layer. "" is the package's own __init__ (its version string).
LAYERS: list[set[str]] = [
    {"", "config"},
    {"redact", "noise"},
    {"errors"},
    {"rundir"},
    {"models"},
    {"data"},
    {"bundle"},
    {"inference"},
    {"evaluation", "curation", "training", "synthesis", "ship"},
    {"studio"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _unit(module: str) -> str:
    """The layering unit of `instructune.a.b`: its package `a` (or top-level module `a`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _nodes(node: ast.AST, runtime: bool) -> Iterator[ast.AST]:
    """Every node under `node`; with `runtime`, not those under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        test = child.test if isinstance(child, ast.If) else None
        if runtime and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            yield from (n for orelse in child.orelse for n in [orelse, *_nodes(orelse, runtime)])
            continue
        yield child
        yield from _nodes(child, runtime)


def _imports(modules: dict[str, Path], runtime: bool = False) -> dict[str, set[str]]:
    """module → the instructune modules it imports (a `from pkg import name` counts as
    `pkg.name` when that is a module, else as `pkg`); `runtime`: only the imports that run,
    not the ones for type checkers."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), runtime):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            edges[module].update(t for t in targets if t.split(".")[0] == "instructune")
    return edges


MODULES = _modules()
EDGES = _imports(MODULES)


def test_every_package_has_a_layer() -> None:
    units = {_unit(module) for module in MODULES}
    assert units - RANK.keys() == set(), "add the new package to LAYERS"
    assert RANK.keys() - units == set(), "LAYERS names a package that no longer exists"


def test_imports_point_down_or_stay_in_their_package() -> None:
    wrong = sorted(
        f"{module} imports {target} ({_unit(module)} → {_unit(target)})"
        for module, targets in EDGES.items()
        for target in targets
        if _unit(target) != _unit(module)
        and RANK.get(_unit(target), len(LAYERS)) >= RANK.get(_unit(module), -1)
    )
    assert wrong == []


def test_no_import_circle_spans_two_packages() -> None:
    """Redundant with the layering while it holds; says which circle when LAYERS is loosened."""
    graph = defaultdict(set)
    for module, targets in EDGES.items():
        for target in targets:
            if _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            unit = todo.pop()
            if unit == goal:
                return True
            if unit not in seen:
                seen.add(unit)
                todo.extend(graph[unit])
        return False

    circles = sorted(f"{a} ⇄ {b}" for a in list(graph) for b in graph[a] if reaches(b, a))
    assert circles == []


def test_no_module_imports_itself_back_at_run_time() -> None:
    """No circle of run-time imports between any two modules, inside a package too: a circle
    makes import order matter (a half-initialised module) and hides which module is the base.
    An import only for type checkers (`if TYPE_CHECKING:`) is not run and may close one."""
    graph = _imports(MODULES, runtime=True)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert circles == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from instructune.data import tokenize\n", {"instructune.data.tokenize"}),
        ("from instructune.config import Config\n", {"instructune.config"}),
        ("from . import formats\n", {"instructune.data.formats"}),
        ("from .templates import load_template\n", {"instructune.data.templates"}),
        ("def f():\n    import instructune.models\n", {"instructune.models"}),
        ("import json\n", set()),
        ("if TYPE_CHECKING:\n    from instructune import config\n", {"instructune.config"}),
    ],
)
def test_the_import_reader_sees_every_kind_of_import(
    tmp_path: Path, source: str, expected: set[str]
) -> None:
    """The checks above are only as good as this reader: it must see relative, nested and
    `from package import module` imports, or an upward arrow would pass unseen."""
    path = tmp_path / "instructune" / "data" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")
    modules = {**MODULES, "instructune.data.probe": path}
    assert _imports(modules).get("instructune.data.probe", set()) == expected


def test_run_time_imports_leave_out_type_checking_ones(tmp_path: Path) -> None:
    path = tmp_path / "instructune" / "data" / "probe.py"
    path.parent.mkdir(parents=True)
    source = (
        "if TYPE_CHECKING:\n    from instructune import config\n"
        "else:\n    import instructune.models\n"
        "def f():\n    from instructune.data import formats\n"
    )
    path.write_text(source, encoding="utf-8")
    modules = {**MODULES, "instructune.data.probe": path}
    found = _imports(modules, runtime=True)["instructune.data.probe"]
    assert found == {"instructune.models", "instructune.data.formats"}
