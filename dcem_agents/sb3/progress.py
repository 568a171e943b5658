"""Progress of SB3 training: a tqdm bar (SB3's own needs ``rich``) and a CSV + TensorBoard logger that keeps what
earlier, interrupted parts of a run wrote."""

from __future__ import annotations

from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, Logger, TensorBoardOutputFormat
from tqdm import tqdm

__all__ = ["TqdmCallback", "make_sb3_logger"]


def make_sb3_logger(run_dir: Path) -> Logger:
    """SB3 logger writing ``run_dir/progress.csv`` and TensorBoard events under ``run_dir/tb``.

    SB3's CSV writer truncates its file, so a resumed run first moves an existing ``progress.csv`` to
    ``progress_1.csv`` (``_2``, ... for later resumptions): every part of an interrupted run keeps its rows.
    """
    csv_path = run_dir / "progress.csv"
    if csv_path.exists() and csv_path.stat().st_size > 0:
        k = 1
        while (run_dir / f"progress_{k}.csv").exists():
            k += 1
        csv_path.rename(run_dir / f"progress_{k}.csv")
    return Logger(str(run_dir), [CSVOutputFormat(str(csv_path)), TensorBoardOutputFormat(str(run_dir / "tb"))])


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
