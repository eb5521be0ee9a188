"""meshfl's import graph: no cycle between modules, and every arrow points down a layer.

The graph is read from the source (``ast``), not by importing: every ``import`` and
``from ... import`` of a ``meshfl`` module, at module level and inside functions alike.
Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they can make neither
a cycle nor an upward arrow at run time (annotations only).

A module's layer is its subpackage (``meshfl.privacy.ledger`` is in ``privacy``) or, for a
module directly under ``meshfl/``, its own name (``simulation``); ``meshfl`` itself (the
package's ``__init__``) is the facade on top. :data:`LAYERS` lists them from the bottom up,
as the code has them (docs/architecture.md draws the same). Layers of one tier are
siblings: neither imports the other.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "meshfl"

LAYERS: list[tuple[str, ...]] = [
    ("config",),  # MeshflConfig, errors, argument checks
    ("data", "models", "privacy", "secure"),  # schemas and generators; model families; DP; HE
    ("agents", "store"),  # the agents on data+models+privacy; the model store on secure
    ("federation",),  # Flower apps, strategy, engine
    ("simulation", "deploy"),  # meshfl.simulate; the apps as Flower's runtime loads them
    ("baselines", "service"),  # references through simulation; the coordinator service
    ("bench",),  # research benchmarks
    ("cli",),  # meshfl
    ("server_cli", "node_cli"),  # meshfl-server (reuses cli's helpers), meshfl-node
    ("meshfl",),  # the package's facade: meshfl.simulate, meshfl.load, meshfl.agents
]
TIER = {layer: tier for tier, layers in enumerate(LAYERS) for layer in layers}
ORDER = " < ".join(t[0] if len(t) == 1 else "{" + ", ".join(t) + "}" for t in LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The meshfl module ``name`` names (a module, or an object inside one)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: from the module's package, up level - 1
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        # ``from meshfl.privacy import noise`` imports the submodule, not just the package.
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    for name in names:
        if name == "meshfl" or name.startswith("meshfl."):
            target = _resolve(name)
            if target is not None and target != module:
                yield target


def imports_of(module: str) -> dict[str, int]:
    """``{imported meshfl module: line of its first import}`` for one module."""
    found: dict[str, int] = {}

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, child):
                    found.setdefault(target, child.lineno)
            visit(child)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")))
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def where(module: str, target: str) -> str:
    path = MODULES[module].relative_to(SRC.parent)
    return f"{path}:{GRAPH[module][target]} ({module} imports {target})"


def test_every_module_is_in_a_layer():
    orphans = sorted({layer_of(m) for m in MODULES} - set(TIER))
    assert not orphans, (
        f"{', '.join(orphans)} is in no layer: add it to LAYERS in tests/test_import_graph.py "
        "and to the diagram in docs/architecture.md."
    )


def test_no_arrow_points_up_or_sideways():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = layer_of(module), layer_of(target)
            if a == b or a not in TIER or b not in TIER or TIER[b] < TIER[a]:
                continue
            direction = "up to" if TIER[b] > TIER[a] else "sideways to its sibling"
            wrong.append(f"{where(module, target)} points {direction} layer {b!r} from {a!r}")
    assert not wrong, f"An import must point down the layers ({ORDER}): " + "; ".join(wrong) + "."


def _cycle() -> list[str] | None:
    """One import cycle between modules (a list that starts and ends with the same module)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(MODULES):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, (
        "Modules import each other in a circle: "
        + ", then ".join(where(a, b) for a, b in itertools.pairwise(cycle))
        + "."
    )


def test_the_walk_sees_function_level_imports():
    # registry.load is reached from meshfl/__init__ at module level; the facade's lazy
    # import of simulation sits inside __getattr__: both must be in the graph.
    assert "meshfl.agents.registry" in GRAPH["meshfl"]
    assert "meshfl.simulation" in GRAPH["meshfl"]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from meshfl.agents import registry", "meshfl.agents.registry"),
        ("def f():\n    from meshfl import simulation", "meshfl.simulation"),
        ("import meshfl.privacy.ledger as L", "meshfl.privacy.ledger"),
        ("from meshfl.config.errors import MeshflError", "meshfl.config.errors"),
    ],
)
def test_the_walk_reads_every_form_of_import(source, found, monkeypatch, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    monkeypatch.setitem(MODULES, "meshfl.probe", probe)
    assert found in imports_of("meshfl.probe")


def test_type_checking_imports_are_left_out(monkeypatch, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import meshfl.cli\n")
    monkeypatch.setitem(MODULES, "meshfl.probe", probe)
    assert imports_of("meshfl.probe") == {}
