"""Run folders: ``runs/<experiment>-<name>-seed<seed>-<YYYYmmdd-HHMMSS>/`` holding the resolved config and outputs."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import IO, Any

import yaml

from dcem_agents.training.checkpoint import load_checkpoint, save_checkpoint, slim_checkpoint
from dcem_agents.training.replay_store import inline_replay

__all__ = ["PUBLISHED_FILES", "RunDirInUseError", "fresh_folder", "lock_run_dir", "make_run_dir", "publish_run",
           "publish_targets", "save_resolved_config", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it (a kill leaves the old file or the new one,
    never half of one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2))


def make_run_dir(root: str | Path, experiment: str, name: str, seed: int) -> Path:
    """Create and return a fresh run folder under ``root`` whose name carries experiment, name, seed and time."""
    return fresh_folder(Path(root) / f"{experiment}-{name}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def fresh_folder(base: Path) -> Path:
    """Create and return ``base``, or ``base-1``, ``base-2``, ... if it exists (two runs started in one second)."""
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


class RunDirInUseError(RuntimeError):
    """Another process holds the run folder (:func:`lock_run_dir`)."""


def lock_run_dir(run_dir: str | Path) -> IO[str]:
    """Lock ``<run_dir>/.lock`` for this process, so two processes never write one run folder; return the open file.

    The lock lasts while the returned file stays open (at most the process's life: a killed process frees it). Where
    ``fcntl`` does not exist (Windows) nothing is locked.

    :raises RunDirInUseError: another process holds it (its pid is in the message).
    """
    f = open(Path(run_dir) / ".lock", "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise RunDirInUseError(f"{run_dir} is in use by another process (pid {pid}); wait for it or stop it "
                               "first") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def save_resolved_config(run_dir: str | Path, config: dict[str, Any]) -> Path:
    """Write the fully resolved config (defaults filled in, overrides applied) to ``<run_dir>/config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))  # a kill never leaves it empty or half-written
    return path


#: config keys that name a destination in the repository -> the run-folder file copied there
PUBLISHED_FILES = {"export_checkpoint": "checkpoint.pt", "export_zip": "model.zip", "export_progress": "progress.csv",
                   "results_path": "regression.json"}
#: summary keys that name a run-folder file -> the config key of its published copy
_SUMMARY_PATHS = {"checkpoint": "export_checkpoint", "model": "export_zip"}


def publish_run(cfg: Any, run_dir: str | Path, summary: dict[str, Any]) -> list[Path]:
    """Ship a finished run into the repository (``train.py --publish``); return the paths written.

    Copies every run-folder file whose config key (:data:`PUBLISHED_FILES`) names a destination (a checkpoint whose
    replay lives in segment files is written self-contained, :func:`~dcem_agents.training.replay_store.inline_replay`,
    or with the config's ``export_slim`` for evaluation only, :func:`~dcem_agents.training.checkpoint.slim_checkpoint`)
    and the run's PNG figures into ``figures_dir`` when the config has one, then writes ``summary`` to
    ``results_json`` with its file paths (``checkpoint``, ``model``) pointing at the published copies. Keys a config
    lacks are skipped.

    :raises FileNotFoundError: a destination is configured but the run folder lacks its file.
    """
    run_dir = Path(run_dir)
    written: list[Path] = []

    def copy(source: Path, destination: str | Path) -> None:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        written.append(Path(destination))

    for key, name in PUBLISHED_FILES.items():
        destination = getattr(cfg, key, None)
        if not destination:
            continue
        if name == "checkpoint.pt":  # self-contained: the replay segments inlined; or slim, for evaluation only
            checkpoint = load_checkpoint(run_dir / name)
            shipped = slim_checkpoint(checkpoint) if getattr(cfg, "export_slim", False) else \
                inline_replay(checkpoint, run_dir / name)
            save_checkpoint(destination, shipped.pop("experiment"), shipped.pop("config"), shipped)
            written.append(Path(destination))
        else:
            copy(run_dir / name, destination)
    figures_dir = getattr(cfg, "figures_dir", None)
    if figures_dir:
        for png in sorted(run_dir.glob("*.png")):
            copy(png, Path(figures_dir) / png.name)
    results_json = getattr(cfg, "results_json", None)
    if results_json:
        shipped = dict(summary)
        for key, cfg_key in _SUMMARY_PATHS.items():
            if key in shipped and getattr(cfg, cfg_key, None):
                shipped[key] = getattr(cfg, cfg_key)
        Path(results_json).parent.mkdir(parents=True, exist_ok=True)
        Path(results_json).write_text(json.dumps(shipped, indent=2))
        written.append(Path(results_json))
    return written


def publish_targets(cfg: Any) -> list[str]:
    """Where :func:`publish_run` would write for ``cfg`` (empty: the config publishes nothing)."""
    keys = [*PUBLISHED_FILES, "figures_dir", "results_json"]
    return [str(getattr(cfg, k)) for k in keys if getattr(cfg, k, None)]
