"""SB3 checkpoints that survive a kill: atomic writes, and a resume that skips a broken latest file.

SB3's ``CheckpointCallback`` writes ``PREFIX_<steps>_steps.zip`` in place: a kill during the write leaves a truncated
zip that every later resume trips over. :class:`AtomicCheckpointCallback` writes the same files (same names, so SB3
users find what they expect) to a temporary name and renames it, the companion files (``VecNormalize`` statistics,
replay buffer, the exact-resume state of :mod:`dcem_agents.sb3.resume`) first and the model zip last, so a model zip
never exists without them. :func:`load_latest` resumes from the newest model zip that loads, and says which broken
ones it skipped; :func:`resume_exactly` puts the saved state back, so that the resumed run continues as the killed
one would have (same episodes, same random numbers).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from dcem_agents.sb3.resume import capture, restore
from dcem_agents.training.checkpoint import CheckpointError, step_checkpoints

__all__ = ["AtomicCheckpointCallback", "companion_path", "load_latest", "resume_exactly"]

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
    :param at_rollout_start: save at the start of the first rollout at least ``save_freq`` calls after the previous
        save, i.e. after an update and before new data, so that a resume loses neither collected data nor an update
        (a save in the middle of a PPO rollout loses the partial rollout; one inside an off-policy step is taken
        after the environment stepped but before the transition is stored). Needed for ``save_resume_state``.
    :param save_resume_state: also save what the zip leaves out (environment states, episode statistics, random
        generators: ``PREFIX_resume_<steps>_steps.pt``, :func:`dcem_agents.sb3.resume.capture`); the environments
        must be :class:`~dcem_agents.envs.ReplayableEnv`.
    """

    def __init__(self, save_freq: int, save_path: str | Path, name_prefix: str = "rl_model",
                 save_vecnormalize: bool = False, save_replay_buffer: bool = False,
                 at_rollout_start: bool = False, save_resume_state: bool = False) -> None:
        super().__init__()
        if save_freq < 1:
            raise ValueError(f"save_freq must be >= 1, got {save_freq}")
        self.save_freq, self.save_path, self.name_prefix = save_freq, Path(save_path), name_prefix
        self.save_vecnormalize, self.save_replay_buffer = save_vecnormalize, save_replay_buffer
        if save_resume_state and not at_rollout_start:
            raise ValueError("save_resume_state needs at_rollout_start=True (a consistent point between updates)")
        self.at_rollout_start, self.save_resume_state = at_rollout_start, save_resume_state
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
        if self.save_resume_state:
            state = capture(self.model)
            _atomic(self.path("resume_", "pt"), lambda tmp: torch.save(state, tmp))
        path = self.path()
        _atomic(path, self.model.save)
        return path


def companion_path(zip_path: Path, kind: str, extension: str) -> Path:
    """``PREFIX_<kind><steps>_steps.<extension>`` beside the model zip ``PREFIX_<steps>_steps.zip`` (the names
    :meth:`AtomicCheckpointCallback.path` writes: ``vecnormalize_`` / ``replay_buffer_`` ``.pkl``, ``resume_`` ``.pt``)."""
    match = re.fullmatch(r"(.*)_(\d+)_steps\.zip", zip_path.name)
    if match is None:
        raise ValueError(f"{zip_path} is not named PREFIX_<steps>_steps.zip")
    return zip_path.with_name(f"{match.group(1)}_{kind}{match.group(2)}_steps.{extension}")


def resume_exactly(model: BaseAlgorithm, zip_path: Path) -> bool:
    """Restore the exact-resume state saved with ``zip_path`` into ``model`` (loaded with ``force_reset=False``, its
    logger set).

    Without that file (a checkpoint of another writer) the environments are reset at the next ``learn`` instead, and
    False is returned: training continues, but not on the killed run's episodes and random numbers.
    """
    path = companion_path(zip_path, "resume_", "pt")
    if not path.is_file():
        log.warning("%s has no resume state (%s): the environments restart their episodes", zip_path, path.name)
        model._last_obs = None  # type: ignore[assignment]  # SB3 resets the environments at the next learn()
        return False
    restore(model, torch.load(path, map_location="cpu", weights_only=True))
    return True


def load_latest(folder: Path, prefix: str, load: Callable[[Path], Any]) -> tuple[Path, Any] | None:
    """``(path, load(path))`` for the newest ``PREFIX_<steps>_steps.zip`` in ``folder`` that loads, or None when
    there is none.

    A file that fails to load (truncated by a kill, corrupt, refused by the allowlist unpickler) is skipped with a
    warning and left in place.

    :raises CheckpointError: there are checkpoints and none loads: starting over would silently discard the run.
    """
    found = step_checkpoints(folder, prefix)
    for path in found:
        try:
            return path, load(path)
        except Exception as e:  # noqa: BLE001 - any failure to read the file means: try the one before
            log.warning("skipping the broken checkpoint %s (%s: %s); resuming from the one before", path,
                        type(e).__name__, e)
    if found:
        raise CheckpointError(f"none of the {len(found)} checkpoints in {folder} loads (see the warnings above): move "
                              "them away to start this run over, or resume from a copy you trust")
    return None
