"""A tqdm progress bar for SB3 training (SB3's own needs ``rich``): timesteps, last mean episode return, steps/s."""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

__all__ = ["TqdmCallback"]


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
