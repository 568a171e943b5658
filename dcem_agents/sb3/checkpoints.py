"""SB3 checkpoints that survive a kill: atomic writes, and a resume that skips a broken latest file.

SB3's ``CheckpointCallback`` writes ``PREFIX_<steps>_steps.zip`` in place: a kill during the write leaves a truncated
zip that every later resume trips over. :class:`AtomicCheckpointCallback` writes the same files (same names, so SB3
users find what they expect) to a temporary name and renames it, the companion files (``VecNormalize`` statistics,
replay buffer) first and the model zip last, so a model zip never exists without them. :func:`load_latest` resumes
from the newest model zip that loads, and says which broken ones it skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from dcem_agents.training.checkpoint import step_checkpoints

__all__ = ["AtomicCheckpointCallback", "load_latest"]

log = logging.getLogger(__name__)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename to ``path`` (the temporary name keeps the suffix: SB3 appends .zip otherwise)."""
    tmp = path.with_name(f".tmp-{path.name}")
    write(str(tmp))
    os.replace(tmp, path)


class AtomicCheckpointCallback(BaseCallback):
    """Save the model every ``save_freq`` calls, as SB3's ``CheckpointCallback`` names it, atomically.

    :param save_freq: calls (steps of the VecEnv) between saves.
    :param save_path: the folder.
    :param name_prefix: file prefix (``PREFIX_<steps>_steps.zip``).
    :param save_vecnormalize: also save the ``VecNormalize`` statistics (``PREFIX_vecnormalize_<steps>_steps.pkl``).
    :param save_replay_buffer: also save an off-policy replay buffer (``PREFIX_replay_buffer_<steps>_steps.pkl``).
    :param at_rollout_start: for on-policy algorithms (PPO, A2C): save at the start of the first rollout at least
        ``save_freq`` calls after the previous save, i.e. after an update and before new data, so that a resume
        loses neither collected data nor an update (a save in the middle of a rollout loses the partial rollout
        and shifts every later update).
    """

    def __init__(self, save_freq: int, save_path: str | Path, name_prefix: str = "rl_model",
                 save_vecnormalize: bool = False, save_replay_buffer: bool = False,
                 at_rollout_start: bool = False) -> None:
        super().__init__()
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}")
        self.save_freq, self.save_path, self.name_prefix = save_freq, Path(save_path), name_prefix
        self.save_vecnormalize, self.save_replay_buffer = save_vecnormalize, save_replay_buffer
        self.at_rollout_start = at_rollout_start
        self._saved_at_call = 0

    def _on_step(self) -> bool:
        if not self.at_rollout_start and self.n_calls % self.save_freq == 0:
            self.save_now()
        return True

    def _on_rollout_start(self) -> None:
        if self.at_rollout_start and self.n_calls - self._saved_at_call >= self.save_freq:
            self._saved_at_call = self.n_calls
            self.save_now()

    def _on_training_end(self) -> None:
        """``learn`` ends after an update: the state a later ``learn`` (a longer run) continues from."""
        if self.at_rollout_start and self.n_calls > self._saved_at_call:
            self._saved_at_call = self.n_calls
            self.save_now()

    def path(self, kind: str = "", extension: str = "zip") -> Path:
        """``PREFIX_[kind]<steps>_steps.<extension>`` for the current number of timesteps."""
        return self.save_path / f"{self.name_prefix}_{kind}{self.num_timesteps}_steps.{extension}"

    def save_now(self) -> Path:
        """Write the companion files, then the model zip; return the zip's path."""
        self.save_path.mkdir(parents=True, exist_ok=True)
        vecnorm = self.model.get_vec_normalize_env()
        if self.save_vecnormalize and vecnorm is not None:
            _atomic(self.path("vecnormalize_", "pkl"), vecnorm.save)
        if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            _atomic(self.path("replay_buffer_", "pkl"), self.model.save_replay_buffer)
        path = self.path()
        _atomic(path, self.model.save)
        return path


def load_latest(folder: Path, prefix: str, load: Callable[[Path], Any]) -> tuple[Path, Any] | None:
    """``(path, load(path))`` for the newest ``PREFIX_<steps>_steps.zip`` in ``folder`` that loads, or None.

    A file that fails to load (truncated by a kill, corrupt) is skipped with a warning and left in place.
    """
    for path in step_checkpoints(folder, prefix):
        try:
            return path, load(path)
        except Exception as e:  # noqa: BLE001 - any failure to read the file means: try the one before
            log.warning("skipping the broken checkpoint %s (%s: %s); resuming from the one before", path,
                        type(e).__name__, e)
    return None
