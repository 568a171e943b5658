"""The library's layers import only downward: math -> models -> planning -> training -> integrations -> experiments.

Read from the source with ``ast``, so a violation fails here even if it is never executed. Also: only the integration
layers import stable-baselines3 / shimmy / dm_control, and the library never calls ``print``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcem_agents"
LAYERS = {"config": 0, "math": 0, "models": 1, "planning": 2, "training": 3, "envs": 4, "sb3": 4, "experiments": 5}
INTEGRATION_ONLY = {"stable_baselines3": {"sb3", "experiments"}, "shimmy": {"envs"}, "dm_control": {"envs"}}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


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
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "dcem_agents" and len(parts) > 1:
            target = parts[1]
            assert LAYERS.get(target, 99) <= LAYERS[layer], f"{path.name} ({layer}) imports {name} from a higher layer"
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
