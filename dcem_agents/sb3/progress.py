"""Progress of SB3 training: a tqdm bar (SB3's own needs ``rich``) and a CSV + TensorBoard logger that keeps one log
per run across interruptions."""

from __future__ import annotations

import csv
import numbers
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger, TensorBoardOutputFormat, filter_excluded_keys
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

#: the column of SB3's log that counts timesteps (the step of every row)
STEP_KEY = "time/total_timesteps"


class ResumableCSVOutputFormat(KVWriter):
    """SB3's ``progress.csv``, one file per run: a resumed run keeps the rows up to its checkpoint and drops later ones.

    :param path: the CSV file.
    :param resume_step: the timesteps of the checkpoint a resumed run starts from; None: a fresh start (any earlier
        file is discarded).
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.keys = list(reader.fieldnames or [])
                self.rows = [r for r in reader if not r.get(STEP_KEY) or float(r[STEP_KEY]) <= resume_step]
        self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            writer.writeheader()
            writer.writerows(self.rows)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """Append one row (rewriting the file with a wider header when a new key appears)."""
        row = {k: v for k, v in filter_excluded_keys(key_values, key_excluded, "csv").items()
               if isinstance(v, (numbers.Number, str, np.generic)) or v is None}  # not videos, figures, ...
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new:
            self.keys.extend(new)
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    def close(self) -> None:
        """Nothing is held open between rows."""


class ResumableTensorBoardOutputFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard output, purging the events after ``resume_step`` (None: a fresh start, old events removed)."""

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:  # noqa: D107 - see the class
        folder = Path(folder)
        if resume_step is None and folder.exists():
            shutil.rmtree(folder)
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=None if resume_step is None else resume_step + 1)
        self._is_closed = False

__all__ = ["TqdmCallback", "make_sb3_logger"]


def make_sb3_logger(run_dir: Path, resume_step: int | None = None) -> Logger:
    """SB3 logger writing ``run_dir/progress.csv`` and TensorBoard events under ``run_dir/tb``: one log per run.

    :param resume_step: the timesteps of the checkpoint a resumed run starts from (rows and events after it are
        dropped, the rest kept); None: a fresh start.
    """
    return Logger(str(run_dir), [ResumableCSVOutputFormat(run_dir / "progress.csv", resume_step),
                                 ResumableTensorBoardOutputFormat(run_dir / "tb", resume_step)])


class TqdmCallback(BaseCallback):
    """Progress over ``total`` agent steps, starting at the model's current timestep count (resumed runs).

    :param total: the run's total timesteps.
    :param desc: the bar's label.
    """

    def __init__(self, total: int, desc: str = "ppo") -> None:
        super().__init__()
        self.total, self.desc = total, desc
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.model.num_timesteps, desc=self.desc, unit="step",
                        dynamic_ncols=True)

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_info_buffer
        if self.bar is not None and buf:
            self.bar.set_postfix(ep_return=f"{sum(e['r'] for e in buf) / len(buf):.0f}")

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.model.n_envs)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
