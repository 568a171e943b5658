"""One metrics logger for every training phase, with SB3's ``record`` / ``dump`` vocabulary.

Values recorded between two ``dump(step)`` calls form one row of ``progress.csv`` and one TensorBoard step. The
CSV is rewritten with a wider header when a new key appears (as SB3 does), so no column is lost.

Resuming keeps one log with no duplicates and no gaps: a logger opened with ``resume_step`` (the step of the checkpoint
the run resumes from) drops the CSV rows written after it, and TensorBoard purges its events after it
(``purge_step``); a logger opened without one (a fresh start, also after a kill before the first checkpoint)
starts the log anew. The CSV table (:class:`CsvLog`) and the TensorBoard writer (:func:`summary_writer`) serve SB3's
logger too (:mod:`dcem_agents.sb3.progress`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["CsvLog", "MetricsLogger", "summary_writer"]


class CsvLog:
    """A CSV table of rows, one file per run, that widens its header when a new key appears (as SB3 does).

    :param path: the file.
    :param step_key: the column that orders the rows.
    :param resume_step: a resumed run keeps the rows up to this step and drops the later ones; None: a fresh start
        (an earlier file, e.g. of an attempt killed before its first checkpoint, is discarded).
    """

    def __init__(self, path: str | Path, step_key: str, resume_step: int | None = None) -> None:
        self.path, self.step_key = Path(path), step_key
        self.keys: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            if resume_step is None:
                self.path.unlink()
            else:
                with self.path.open(newline="") as f:
                    reader = csv.DictReader(f)
                    self.keys = list(reader.fieldnames or [])
                    self.rows = [r for r in reader if not r.get(step_key) or float(r[step_key]) <= resume_step]
                self._rewrite()

    def append(self, row: dict[str, Any]) -> None:
        """Write one row (the whole file again when it brings a new key)."""
        self.rows.append(row)
        new = [k for k in row if k not in self.keys]
        if new or not self.path.exists():
            self.keys.extend(new)
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys)
            writer.writeheader()
            writer.writerows(self.rows)


def summary_writer(folder: str | Path, resume_step: int | None = None):  # noqa: ANN201 - SummaryWriter, imported lazily
    """A TensorBoard ``SummaryWriter`` on ``folder`` that purges the events after ``resume_step`` (None: a fresh start,
    earlier events removed)."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    folder = Path(folder)
    if resume_step is None and folder.exists():
        shutil.rmtree(folder)
    return SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)


class MetricsLogger:
    """Write scalar metrics to ``<run_dir>/progress.csv`` and, if available, TensorBoard under ``<run_dir>/tb``.

    :param run_dir: folder of the run (created if needed).
    :param tensorboard: also write TensorBoard event files (needs the ``tensorboard`` package).
    :param resume_step: the step of the checkpoint a resumed run starts from: rows (and TensorBoard events) after it
        are dropped, the rest kept. None: a fresh start, any earlier log is discarded.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv = CsvLog(self.run_dir / "progress.csv", "step", resume_step)
        self._pending: dict[str, float] = {}
        self._writer = summary_writer(self.run_dir / "tb", resume_step) if tensorboard else None

    def record(self, key: str, value: float) -> None:
        """Stage ``value`` under ``key`` (e.g. ``"train/loss"``) for the next :meth:`dump`."""
        self._pending[key] = float(value)

    def dump(self, step: int) -> dict[str, float]:
        """Write the staged values as the row for ``step``; returns them."""
        self.csv.append({"step": step, **self._pending})
        if self._writer is not None:
            for k, v in self._pending.items():
                if math.isfinite(v):
                    self._writer.add_scalar(k, v, step)
            self._writer.flush()
        out, self._pending = self._pending, {}
        return out

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
