"""Run folders: ``runs/<experiment>-<name>-seed<seed>-<YYYYmmdd-HHMMSS>/`` holding the resolved config and outputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["make_run_dir", "save_resolved_config"]


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
