"""Checkpoint files of this package: a ``torch.save`` dict tagged with its format, experiment and config.

Writes are atomic (temporary file, then rename), so an interrupted save never leaves a broken checkpoint.

Loading never runs code from the file: :func:`load_checkpoint` uses ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers only and refuses any other pickled object (a crafted file that would run a command is
rejected before anything in it executes). Checkpoints written before the replay was stored as tensors hold numpy
arrays; for those exactly numpy's array reconstruction (``ndarray``, ``dtype``, ``_reconstruct`` and the dtype
classes) is allowed as well, nothing else.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "SLIM_DROPPED", "checkpoint_step", "error_line", "is_slim",
           "load_checkpoint", "newest_step", "require_file", "save_checkpoint", "slim_checkpoint", "step_checkpoints"]

#: trainer-state entries a slim (evaluation-only) checkpoint leaves out: what only continuing to train needs
SLIM_DROPPED = ("optimizer", "decoder_optimizer", "replay")

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


def _numpy_array_globals() -> list[Any]:
    """The globals that unpickling a plain numpy array needs, and nothing more (older checkpoints' replay)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType") and n != "ObjectDType"]
    return [_reconstruct, np.ndarray, np.dtype, *dtype_classes]


def error_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def require_file(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path`, if it is a file.

    :raises CheckpointError: it is missing, or a folder (named as such: a run folder given for its checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        if path.is_dir():
            raise CheckpointError(f"{path} is a folder: name the checkpoint file in it (e.g. {path / 'checkpoint.pt'})")
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, experiment: str | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    :param path: the checkpoint file.
    :param experiment: if given, the experiment the checkpoint must belong to.
    :param map_location: where tensors are loaded.
    :raises CheckpointError: the file does not exist, is not a dcem-agents checkpoint (or pickles anything but tensors,
        numpy arrays and plain values), or belongs to another experiment.
    """
    path = require_file(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our format"
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a dcem-agents checkpoint, or holds objects other than tensors and "
                              f"plain values, which are never unpickled ({first})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a dcem-agents checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if experiment is not None and data.get("experiment") != experiment:
        raise CheckpointError(f"{path} is a {data.get('experiment')!r} checkpoint, expected {experiment!r}")
    return data


def slim_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` without what only training on needs (:data:`SLIM_DROPPED`: optimizer states and the replay),
    marked ``trainer["slim"] = True``: the weights, config, counters and evaluations stay, so it evaluates and compares
    like the full one at a fraction of the size (a walker-sized phase 1: its replay alone grows to tens of MB)."""
    trainer = checkpoint.get("trainer")
    if not isinstance(trainer, dict):
        return checkpoint
    return {**checkpoint, "trainer": {**{k: v for k, v in trainer.items() if k not in SLIM_DROPPED}, "slim": True}}


def is_slim(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` was written by :func:`slim_checkpoint` (it cannot start or continue training)."""
    trainer = checkpoint.get("trainer")
    return isinstance(trainer, dict) and bool(trainer.get("slim"))


def checkpoint_step(path: Path, prefix: str) -> int | None:
    """The steps in an SB3 checkpoint's name ``PREFIX_<steps>_steps.zip`` (None: not such a name)."""
    m = re.fullmatch(rf"{re.escape(prefix)}_(\d+)_steps\.zip", Path(path).name)
    return None if m is None else int(m.group(1))


def step_checkpoints(folder: Path, prefix: str) -> list[Path]:
    """The ``PREFIX_<steps>_steps.zip`` files in ``folder`` (SB3's ``CheckpointCallback`` names), most steps first."""
    found = [(step, p) for p in Path(folder).glob(f"{prefix}_*_steps.zip")
             if (step := checkpoint_step(p, prefix)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def newest_step(folder: Path, prefix: str) -> int | None:
    """The steps of the newest ``PREFIX_<steps>_steps.zip`` in ``folder`` (None: there is none)."""
    found = step_checkpoints(folder, prefix)
    return checkpoint_step(found[0], prefix) if found else None
