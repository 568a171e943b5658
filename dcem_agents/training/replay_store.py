"""Incremental replay checkpoints: each episode is written once, into a segment file beside the checkpoint.

A run's resume checkpoint is rewritten after every collected episode. Holding the whole replay in it makes every
write as large as the buffer (about 124 MB and 0.3-1.3 s at a million walker transitions on this machine). Instead
:meth:`ReplayStore.save` writes only the episodes added since the previous save, as one segment file
``<folder>/<first>-<end>.pt`` (global episode indices ``[first, end)``, tensors only, written atomically), and
returns a small *manifest* that goes into the checkpoint in place of the data. :meth:`ReplayStore.load` rebuilds the
buffer from a manifest and its segments.

Crash safety follows from the order of writes: a segment is complete (temporary file, then rename) before the
checkpoint that lists it is written, and :meth:`ReplayStore.prune` deletes segments only after the checkpoint that
no longer lists them is on disk. A kill at any point therefore leaves the last checkpoint's segments intact; a
segment written after it is simply written again, with the same name, when the resumed run reaches that episode.

The segments live in ``replay/`` beside ``checkpoint.pt``; :func:`inline_replay` turns a checkpoint back into a
self-contained one (the published copy of a run).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from dcem_agents.training.checkpoint import CheckpointError, error_line
from dcem_agents.training.replay import EpisodeReplay

__all__ = ["MissingReplayError", "REPLAY_FOLDER", "ReplayStore", "inline_replay", "is_manifest", "load_replay"]


class MissingReplayError(CheckpointError, FileNotFoundError):
    """A checkpoint's replay segment file is not where its manifest says."""


#: name of the segment folder beside a checkpoint
REPLAY_FOLDER = "replay"
_SEGMENT = re.compile(r"(\d+)-(\d+)\.pt")


def is_manifest(state: dict[str, Any]) -> bool:
    """Whether a replay state is a segment manifest (:meth:`ReplayStore.save`) rather than the data itself."""
    return isinstance(state, dict) and "segments" in state


class ReplayStore:
    """The segment files of one run's replay.

    :param folder: where the segments live (created on the first save).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._stored_until = 0  # global index of the first episode with no segment yet
        self._segments: list[tuple[int, int, str]] = []

    def save(self, replay: EpisodeReplay) -> dict[str, Any]:
        """Write the episodes added since the last save as one segment; return the manifest of the whole buffer."""
        first_kept = replay.total_episodes - len(replay)
        start = max(self._stored_until, first_kept)
        if start < replay.total_episodes:
            part = replay.subset(start - first_kept, len(replay))
            name = f"{start:08d}-{replay.total_episodes:08d}.pt"
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / (name + ".tmp")
            torch.save(part.state_dict(), tmp)
            os.replace(tmp, self.folder / name)
            self._segments = [s for s in self._segments if s[0] < start] + [(start, replay.total_episodes, name)]
            self._stored_until = replay.total_episodes
        self._segments = [s for s in self._segments if s[1] > first_kept]  # fully evicted: no longer needed
        return {"segments": [list(s) for s in self._segments], "folder": REPLAY_FOLDER, "first_kept": first_kept,
                "total_episodes": replay.total_episodes, "capacity": replay.capacity, "obs_dim": replay.obs_dim,
                "action_dim": replay.action_dim}

    def load(self, manifest: dict[str, Any], replay: EpisodeReplay) -> None:
        """Restore ``replay`` from ``manifest`` and this folder's segments; later saves continue from it.

        :raises MissingReplayError: a listed segment is missing (the ``replay/`` folder was not kept with the
            checkpoint). :raises CheckpointError: a segment cannot be read (truncated, corrupt, not a replay segment).
        """
        parts = []
        for start, end, name in manifest["segments"]:
            path = self.folder / name
            if not path.is_file():
                raise MissingReplayError(f"replay segment {path} is missing: keep the {REPLAY_FOLDER}/ folder next to "
                                         "the checkpoint (or use a published, self-contained copy)")
            part = EpisodeReplay(replay.obs_dim, replay.action_dim, capacity=2**62)
            try:
                part.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the run cannot resume from it
                raise CheckpointError(f"replay segment {path} cannot be read ({type(e).__name__}: {error_line(e)}): "
                                      f"restore the {REPLAY_FOLDER}/ folder from a copy taken with the checkpoint") from e
            skip = max(manifest["first_kept"] - start, 0)
            parts.append(part.subset(skip, len(part)))
        replay.restore(parts, int(manifest["total_episodes"]), int(manifest["capacity"]))
        self._segments = [tuple(s) for s in manifest["segments"]]  # type: ignore[misc]
        self._stored_until = int(manifest["total_episodes"])

    def prune(self, manifest: dict[str, Any]) -> None:
        """Delete the segment files ``manifest`` does not list (call after the checkpoint holding it is written)."""
        if not self.folder.is_dir():
            return
        keep = {name for _, _, name in manifest["segments"]}
        for path in self.folder.iterdir():
            if path.name not in keep and (_SEGMENT.fullmatch(path.name) or path.name.endswith(".pt.tmp")):
                path.unlink(missing_ok=True)


def load_replay(state: dict[str, Any], replay: EpisodeReplay, checkpoint_path: str | Path) -> None:
    """Restore ``replay`` from a checkpoint's replay state, whole or a manifest of the segments beside
    ``checkpoint_path`` (e.g. phase 2 starting from a phase-1 run's checkpoint)."""
    if is_manifest(state):
        ReplayStore(Path(checkpoint_path).parent / state["folder"]).load(state, replay)
    else:
        replay.load_state_dict(state)


def inline_replay(checkpoint: dict[str, Any], checkpoint_path: str | Path) -> dict[str, Any]:
    """``checkpoint`` with a segment-manifest replay (``checkpoint["trainer"]["replay"]``) replaced by the data itself,
    read from the segments beside ``checkpoint_path``; other checkpoints are returned unchanged."""
    trainer = checkpoint.get("trainer")
    if not isinstance(trainer, dict) or not is_manifest(trainer.get("replay", {})):
        return checkpoint
    manifest = trainer["replay"]
    replay = EpisodeReplay(manifest["obs_dim"], manifest["action_dim"], manifest["capacity"])
    load_replay(manifest, replay, checkpoint_path)
    return {**checkpoint, "trainer": {**trainer, "replay": replay.state_dict()}}
