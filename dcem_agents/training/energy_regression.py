"""Training energy models for regression through an inner optimizer (the paper's sect. 5.1, eq. 6).

The task ``y = x sin x`` on ``[0, 2π]`` (:func:`target`, :func:`regression_data`) and one trained model of the
ensemble (:class:`RegressionMember`: an energy network, its GD or DCEM predictor ``ŷ = argmin_y E(y|x)``, its
optimizer, learning-rate schedule and random streams). The experiment runner
(:mod:`dcem_agents.experiments.regression`) builds members from its config and trains them in lockstep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcem_agents.models.energy import EnergyNet
from dcem_agents.models.energy_predictors import DCEMPredictor

__all__ = ["RegressionMember", "inner_iterates", "regression_data", "target"]


def target(x: Tensor) -> Tensor:
    """The regression target ``f(x) = x sin x`` (sect. 5.1)."""
    return x * torch.sin(x)


def regression_data(n_train: int, n_test: int, device: torch.device) -> dict[str, Tensor]:
    """Training inputs (evenly spaced on [0, 2π], endpoints included) and test inputs (midpoints of an even grid).

    :return: ``x_train``, ``y_train`` (n_train, 1), ``x_test``, ``y_test`` (n_test, 1).
    """
    x_train = torch.linspace(0.0, 2 * math.pi, n_train, device=device).unsqueeze(1)
    x_test = ((torch.arange(n_test, device=device) + 0.5) * (2 * math.pi / n_test)).unsqueeze(1)
    return {"x_train": x_train, "y_train": target(x_train), "x_test": x_test, "y_test": target(x_test)}


def inner_iterates(predictor: nn.Module, x: Tensor, n: int, noise_seed: int) -> Tensor:
    """The predictor's estimates after 1 … ``n`` inner steps, ``(n, B, 1)``, without gradients (DCEM noise fixed)."""
    with torch.no_grad():
        if isinstance(predictor, DCEMPredictor):
            gen = torch.Generator(device=x.device).manual_seed(noise_seed)
            return predictor.iterates(x, n, generator=gen)
        return predictor.iterates(x, n)


@dataclass
class RegressionMember:
    """One trained model: a method and a seed, with its optimizer, data stream and timers."""

    method: str
    seed: int
    energy: EnergyNet
    predictor: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    batches: torch.Generator
    noise: torch.Generator
    train_seconds: float = 0.0

    @classmethod
    def create(cls, method: str, seed: int, predictor_fn: Callable[[EnergyNet], nn.Module], *, hidden: int,
               n_layers: int, lr: float, lr_patience: int, lr_factor: float, device: torch.device) -> RegressionMember:
        """A fresh member: the energy initialized from ``seed``, minibatches from ``seed``, DCEM noise from ``seed + 1``."""
        energy = EnergyNet(1, 1, hidden, n_layers, generator=torch.Generator().manual_seed(seed)).to(device)
        optimizer = torch.optim.Adam(energy.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", patience=lr_patience, factor=lr_factor)
        batches = torch.Generator(device=device).manual_seed(seed)
        noise = torch.Generator(device=device).manual_seed(seed + 1)
        return cls(method, seed, energy, predictor_fn(energy), optimizer, scheduler, batches, noise)

    @property
    def key(self) -> str:
        return f"{self.method}/seed{self.seed}"

    def predict(self, x: Tensor) -> Tensor:
        """``ŷ`` for inputs ``x`` (B, 1) (eq. 6), DCEM's sampling drawn from the member's noise stream."""
        if isinstance(self.predictor, DCEMPredictor):
            return self.predictor(x, generator=self.noise)
        return self.predictor(x)

    def update(self, x: Tensor, y: Tensor, batch_size: int, clip_norm: float) -> Tensor:
        """One Adam step on a random minibatch of ``(x, y)`` (clipping the gradient norm at ``clip_norm`` if > 0);
        returns the (detached) minibatch loss ``(ŷ - y)²``."""
        start = time.perf_counter()
        idx = torch.randint(x.shape[0], (batch_size,), generator=self.batches, device=x.device)
        loss = F.mse_loss(self.predict(x[idx]), y[idx])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm > 0:
            nn.utils.clip_grad_norm_(self.energy.parameters(), clip_norm)
        self.optimizer.step()
        self.train_seconds += time.perf_counter() - start
        return loss.detach()

    def mse_per_step(self, x: Tensor, y: Tensor, n: int, noise_seed: int) -> list[float]:
        """Mean squared error of the estimates after 1 … ``n`` inner steps (n,)."""
        its = inner_iterates(self.predictor, x, n, noise_seed)
        return ((its - y) ** 2).mean(dim=(1, 2)).tolist()
