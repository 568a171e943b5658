"""One metrics logger for every training phase, with SB3's ``record`` / ``dump`` vocabulary.

Values recorded between two ``dump(step)`` calls form one row of ``progress.csv`` and one TensorBoard step. The
CSV is rewritten with a wider header when a new key appears (as SB3 does), so no column is lost.

Resuming keeps one log with no duplicates and no gaps: a logger opened with ``resume_step`` (the step of the checkpoint
the run resumes from) drops the CSV rows written after it, and TensorBoard purges its events after it
(``purge_step``); a logger opened without one (a fresh start, also after a kill before the first checkpoint)
starts the log anew.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger"]


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
        self.csv_path = self.run_dir / "progress.csv"
        self._pending: dict[str, float] = {}
        self._keys: list[str] = []
        self._rows: list[dict[str, Any]] = []
        if self.csv_path.exists():
            if resume_step is None:  # a fresh start: what an earlier (killed) attempt logged is void
                self.csv_path.unlink()
            else:  # resuming: keep what earlier parts wrote up to the checkpoint
                with self.csv_path.open(newline="") as f:
                    reader = csv.DictReader(f)
                    self._keys = list(reader.fieldnames or [])
                    self._rows = list(reader)
                self.drop_after(resume_step)
        self._writer = None
        if tensorboard:
            import shutil

            from torch.utils.tensorboard import SummaryWriter

            if resume_step is None and (self.run_dir / "tb").exists():
                shutil.rmtree(self.run_dir / "tb")
            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def record(self, key: str, value: float) -> None:
        """Stage ``value`` under ``key`` (e.g. ``"train/loss"``) for the next :meth:`dump`."""
        self._pending[key] = float(value)

    def dump(self, step: int) -> dict[str, float]:
        """Write the staged values as the row for ``step``; returns them."""
        row = {"step": step, **self._pending}
        new_keys = [k for k in row if k not in self._keys]
        self._keys.extend(new_keys)
        self._rows.append(row)
        if new_keys or not self.csv_path.exists():
            self._rewrite()
        else:
            with self.csv_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._keys).writerow(row)
        if self._writer is not None:
            for k, v in self._pending.items():
                if math.isfinite(v):
                    self._writer.add_scalar(k, v, step)
            self._writer.flush()
        out, self._pending = self._pending, {}
        return out

    def _rewrite(self) -> None:
        with self.csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._keys)
            w.writeheader()
            w.writerows(self._rows)

    def drop_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (rows a killed run wrote after its last checkpoint), rewriting the CSV."""
        kept = [r for r in self._rows if float(r.get("step", 0) or 0) <= step]
        if len(kept) != len(self._rows):
            self._rows = kept
            self._rewrite()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
