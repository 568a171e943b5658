"""Run folders: ``runs/<experiment>-<name>-seed<seed>-<YYYYmmdd-HHMMSS>/`` holding the resolved config and outputs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["make_run_dir", "publish", "save_resolved_config"]


def make_run_dir(root: str | Path, experiment: str, name: str, seed: int) -> Path:
    """Create and return a fresh run folder under ``root`` whose name carries experiment, name, seed and time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{experiment}-{name}-seed{seed}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def save_resolved_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write the fully resolved config (defaults filled in, overrides applied) to ``<run_dir>/config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    with path.open("w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path


def publish(summary: dict[str, Any], results_json: str | Path | None,
            copies: Iterable[tuple[str | Path, str | Path | None]] = ()) -> None:
    """Ship a run's outputs into the repository: copy each ``(source, destination)`` that has a destination, then
    write ``summary`` as JSON to ``results_json`` when given (parent folders created)."""
    for source, destination in copies:
        if destination:
            Path(destination).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
    if results_json:
        Path(results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(results_json).write_text(json.dumps(summary, indent=2))
