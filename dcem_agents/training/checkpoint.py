"""Checkpoint files of this package: a ``torch.save`` dict tagged with its format, experiment and config.

Writes are atomic (temporary file, then rename), so an interrupted save never leaves a broken checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "latest_step_checkpoint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "dcem-agents/1"


class CheckpointError(ValueError):
    """A checkpoint path is missing or the file is not a dcem-agents checkpoint of the expected kind."""


def save_checkpoint(path: str | Path, experiment: str, config: dict[str, Any], payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` with the format tag, ``experiment`` name and resolved ``config`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "experiment": experiment, "config": config, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, experiment: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    :param path: the checkpoint file.
    :param experiment: if given, the experiment the checkpoint must belong to.
    :param map_location: where tensors are loaded.
    :raises CheckpointError: the file does not exist, is not a dcem-agents checkpoint, or belongs to another experiment.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our format"
        raise CheckpointError(f"{path} is not a dcem-agents checkpoint (torch.load failed: {e})") from e
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dcem-agents checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if experiment is not None and data.get("experiment") != experiment:
        raise CheckpointError(f"{path} is a {data.get('experiment')!r} checkpoint, expected {experiment!r}")
    return data


def latest_step_checkpoint(folder: Path, prefix: str) -> Path | None:
    """The ``PREFIX_<steps>_steps.zip`` in ``folder`` with the most steps (SB3's ``CheckpointCallback`` names), or None."""
    found = [(int(m.group(1)), p) for p in folder.glob(f"{prefix}_*_steps.zip")
             if (m := re.fullmatch(rf"{re.escape(prefix)}_(\d+)_steps", p.stem))]
    return max(found)[1] if found else None
