"""Progress of SB3 training: a tqdm bar (SB3's own needs ``rich``) and a CSV + TensorBoard logger that keeps one log
per run across interruptions."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger, TensorBoardOutputFormat, filter_excluded_keys
from tqdm import tqdm

from dcem_agents.training.metrics import CsvLog, summary_writer

#: the column of SB3's log that counts timesteps (the step of every row)
STEP_KEY = "time/total_timesteps"


class ResumableCSVOutputFormat(KVWriter):
    """SB3's ``progress.csv``, one file per run (:class:`~dcem_agents.training.metrics.CsvLog` on SB3's timesteps).

    :param path: the CSV file.
    :param resume_step: the timesteps of the checkpoint a resumed run starts from; None: a fresh start.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.log = CsvLog(path, STEP_KEY, resume_step)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Append one row of scalars and strings (SB3's videos, figures, ... are not CSV values)."""
        self.log.append({k: v for k, v in filter_excluded_keys(key_values, key_excluded, "csv").items()
                         if isinstance(v, (numbers.Number, str, np.generic)) or v is None})

    def close(self) -> None:
        """Nothing is held open between rows."""


class ResumableTensorBoardOutputFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard output on :func:`~dcem_agents.training.metrics.summary_writer` (events after ``resume_step``
    purged; None: a fresh start)."""

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:  # noqa: D107 - see the class
        self.writer = summary_writer(folder, resume_step)
        self._is_closed = False


__all__ = ["ENV_STEPS_ATTRIBUTE", "EnvStepCounter", "TqdmCallback", "env_steps_taken", "make_sb3_logger"]


def make_sb3_logger(run_dir: Path, resume_step: int | None = None) -> Logger:
    """SB3 logger writing ``run_dir/progress.csv`` and TensorBoard events under ``run_dir/tb``: one log per run.

    :param resume_step: the timesteps of the checkpoint a resumed run starts from (rows and events after it are
        dropped, the rest kept); None: a fresh start.
    """
    return Logger(str(run_dir), [ResumableCSVOutputFormat(run_dir / "progress.csv", resume_step),
                                 ResumableTensorBoardOutputFormat(run_dir / "tb", resume_step)])


#: attribute of an SB3 model counting the environment steps it has trained on, exactly (an action repeat cut short by
#: the end of an episode counts the steps it took); saved in its zips, so a resumed run continues the count
ENV_STEPS_ATTRIBUTE = "dcem_env_steps"


def env_steps_taken(model: Any, action_repeat: int) -> int:
    """The environment steps ``model`` has trained on (a model saved before the count existed: its timesteps x
    ``action_repeat``)."""
    return int(getattr(model, ENV_STEPS_ATTRIBUTE, model.num_timesteps * action_repeat))


class EnvStepCounter(BaseCallback):
    """Add each step's environment steps (``info["action_repeat_steps"]`` of :class:`~dcem_agents.envs.ActionRepeat`,
    summed over the environments) to the model's :data:`ENV_STEPS_ATTRIBUTE`. Put it first in the callback list, so
    that evaluations and checkpoints see the count.

    :param action_repeat: what a step counts when its info has no such key.
    """

    def __init__(self, action_repeat: int) -> None:
        super().__init__()
        self.action_repeat = action_repeat

    def _on_training_start(self) -> None:
        setattr(self.model, ENV_STEPS_ATTRIBUTE, env_steps_taken(self.model, self.action_repeat))

    def _on_step(self) -> bool:
        taken = sum(int(info.get("action_repeat_steps", self.action_repeat)) for info in self.locals["infos"])
        setattr(self.model, ENV_STEPS_ATTRIBUTE, getattr(self.model, ENV_STEPS_ATTRIBUTE) + taken)
        return True


class TqdmCallback(BaseCallback):
    """Progress over ``total`` agent steps, starting at the model's current timestep count (resumed runs).

    :param total: the run's total timesteps.
    :param desc: the bar's label.
    :param position: where the run is, from the model (default: its timesteps), in the unit of ``total``.
    """

    def __init__(self, total: int, desc: str = "ppo", position: Callable[[Any], int] | None = None) -> None:
        super().__init__()
        self.total, self.desc, self.position = total, desc, position
        self.bar: tqdm | None = None

    def _at(self) -> int:
        return self.model.num_timesteps if self.position is None else self.position(self.model)

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self._at(), desc=self.desc, unit="step", dynamic_ncols=True)

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_info_buffer
        if self.bar is not None and buf:
            self.bar.set_postfix(ep_return=f"{sum(e['r'] for e in buf) / len(buf):.0f}")

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.model.n_envs if self.position is None else self._at() - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
