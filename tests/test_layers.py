"""The library's layers import only downward: math -> models -> planning -> training -> integrations -> experiments
-> the comparison tools; and no module imports itself back, however indirectly (no import cycle, within a layer too).

Read from the source with ``ast``, so a violation fails here even if it is never executed (imports inside functions
count). Also: only the integration layers import stable-baselines3 / shimmy / dm_control, and the library never calls
``print``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcem_agents"
LAYERS = {"config": 0, "math": 0, "models": 1, "planning": 2, "training": 3, "envs": 4, "sb3": 4, "experiments": 5,
          "evaluation": 6}
#: modules whose layer is not their package's: the evaluation package spans layers (its __init__ imports nothing)
MODULE_LAYERS = {"evaluation.stats": 0, "evaluation.harness": 3, "evaluation.report": 3,
                 "evaluation.regression_figures": 3, "evaluation.cartpole_embed_figures": 3, "evaluation.seeds": 3,
                 "evaluation": 0}
INTEGRATION_ONLY = {"stable_baselines3": {"sb3", "experiments", "evaluation"}, "shimmy": {"envs"},
                    "dm_control": {"envs"}, "ray": {"training"}, "rliable": {"evaluation"}}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _rank(dotted: str) -> int:
    """Layer number of a module ``a.b`` inside the package (its own entry in MODULE_LAYERS, else its package's)."""
    parts = dotted.split(".")
    if ".".join(parts[:2]) in MODULE_LAYERS:
        return MODULE_LAYERS[".".join(parts[:2])]
    if len(parts) == 1 and parts[0] in MODULE_LAYERS:
        return MODULE_LAYERS[parts[0]]
    return LAYERS.get(parts[0], 99)


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from a import b`` counts ``a.b`` when ``b`` is a module;
    importing ``a.b`` also runs ``a``'s ``__init__``, except from inside ``a``, where it is already running)."""
    root = package.name
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for mod in mods:
                parts = mod.split(".")
                if parts[0] != root:
                    continue
                for i in range(2, len(parts) + 1):  # every package on the way is imported too
                    prefix = ".".join(parts[:i])
                    if prefix in files and prefix != name and not name.startswith(prefix + "."):
                        targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_deliberate_cycle_is_caught(tmp_path: Path) -> None:
    """The check fails on a cycle: two sibling modules of one layer importing each other (one lazily, in a
    function), and a package whose __init__ imports a module of another package that imports it back."""
    pkg = tmp_path / "pkg"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiments" / "__init__.py").write_text("")
    (pkg / "experiments" / "runner.py").write_text("from pkg.experiments.plots import draw\n")
    (pkg / "experiments" / "plots.py").write_text("def draw():\n    from pkg.experiments.runner import x\n")
    assert find_cycle(import_graph(pkg)) in (
        ["pkg.experiments.plots", "pkg.experiments.runner", "pkg.experiments.plots"],
        ["pkg.experiments.runner", "pkg.experiments.plots", "pkg.experiments.runner"])
    (pkg / "experiments" / "plots.py").write_text("def draw():\n    pass\n")
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "tools").mkdir()
    (pkg / "tools" / "__init__.py").write_text("")
    (pkg / "tools" / "x.py").write_text("from pkg.experiments.plots import draw\n")
    (pkg / "experiments" / "__init__.py").write_text("from pkg.tools import x\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.experiments", "pkg.tools.x", "pkg.experiments"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (from dcem_agents...)")
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path: Path) -> None:
    layer = _layer_of(path)
    assert layer in LAYERS, f"{path}: unknown layer {layer!r}; add it to LAYERS in this test"
    own = _rank(_module_name(path).split(".", 1)[1])
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "dcem_agents" and len(parts) > 1:
            target = ".".join(parts[1:])
            assert _rank(target) <= own, f"{path.name} (layer {own}) imports {name} from a higher layer"
        if parts[0] in INTEGRATION_ONLY:
            assert layer in INTEGRATION_ONLY[parts[0]], f"{path.name} ({layer}) imports {parts[0]}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_print_in_library(path: Path) -> None:
    calls = [n for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not calls, f"{path}: use logging, not print (line {calls[0].lineno if calls else ''})"


def test_core_import_is_light() -> None:
    """``import dcem_agents`` does not pull in stable-baselines3, shimmy or dm_control."""
    import subprocess
    import sys

    code = "import sys, dcem_agents; print(sorted(m for m in ('stable_baselines3', 'shimmy', 'dm_control') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
