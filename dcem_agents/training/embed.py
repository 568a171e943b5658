"""Alg. 2: learn a latent action space by backpropagating the controller's cost through DCEM into the decoder.

Each step samples initial states ``x_init ~ D``, solves the embedded control problem (eq. 8)

    ẑ = argmin_z C(f_dec(z); x_init)

with DCEM, and takes a gradient step on ``C(f_dec(ẑ); x_init)``. The gradient reaches the decoder twice: directly
through the decoded plan ``f_dec(ẑ)``, and through ``ẑ`` itself, i.e. through every DCEM sample, the soft top-k and
the mean updates (the "DCEM machinery" of sect. 4.2 that keeps the latent space searchable).

The trainer knows nothing about the task: it gets a decoder and a cost factory ``make_cost(x_init)`` returning the
controller cost ``(B, N, H, A) -> (B, N)`` of action sequences from those states (known cartpole dynamics here, a
learned world model later).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from dcem_agents.planning.latent import ActionCost, LatentCEMSettings, latent_plan

__all__ = ["CostFactory", "EmbeddingTrainer"]

#: ``make_cost(x_init (B, ...)) -> cost`` with ``cost: (B, N, H, A) -> (B, N)``.
CostFactory = Callable[[Tensor], ActionCost]


class EmbeddingTrainer:
    """Adam on the decoder with the alg.-2 loss, gradient-norm clipping and a cosine learning-rate schedule.

    :param decoder: the latent action decoder ``f_dec`` being learned (has ``latent_dim``).
    :param make_cost: cost factory (module docstring).
    :param settings: the latent DCEM controller used inside the loss (paper: 100 samples, 10 elites, 10 iterations,
        τ = 1).
    :param lr: initial learning rate.
    :param total_steps: length of the cosine schedule (the learning rate reaches ``lr * lr_min_factor`` there).
    :param lr_min_factor: final learning rate as a fraction of ``lr``.
    :param grad_clip: maximum gradient norm (``<= 0``: no clipping).
    """

    def __init__(
        self,
        decoder: nn.Module,
        make_cost: CostFactory,
        settings: LatentCEMSettings,
        *,
        lr: float = 1e-3,
        total_steps: int = 1000,
        lr_min_factor: float = 0.05,
        grad_clip: float = 1.0,
    ) -> None:
        if lr <= 0 or total_steps < 1 or not 0 <= lr_min_factor <= 1:
            raise ValueError(
                f"need lr > 0, total_steps >= 1, 0 <= lr_min_factor <= 1; got {lr}, {total_steps}, {lr_min_factor}"
            )
        self.decoder = decoder
        self.make_cost = make_cost
        self.settings = settings
        self.grad_clip = grad_clip
        self.optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)

        def cosine(step: int) -> float:
            progress = min(step, total_steps) / total_steps
            return lr_min_factor + (1 - lr_min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)
        self.best_cost = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.best_step = -1

    def loss(self, x_init: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean controller cost ``C(f_dec(ẑ); x_init)`` over the states ``x_init`` (B, ...), differentiable (alg. 2)."""
        cost = self.make_cost(x_init)
        plan = latent_plan(cost, self.decoder, x_init.shape[0], generator=generator, **self.settings.as_kwargs())
        return cost(plan.actions.unsqueeze(1)).squeeze(1).mean()

    def train_step(self, x_init: Tensor, generator: torch.Generator | None = None) -> dict[str, float]:
        """One alg.-2 update on the initial states ``x_init`` (B, ...); returns ``loss``, ``grad_norm`` and ``lr``."""
        self.decoder.train()
        loss = self.loss(x_init, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.decoder.parameters() if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr}

    @torch.no_grad()
    def validate(self, x_val: Tensor, seed: int, step: int | None = None) -> float:
        """Mean cost of the latent controller on the fixed states ``x_val`` with fixed sampling noise (``seed``).

        The noise is redrawn from ``seed`` on every call, so the value is a deterministic function of the decoder.
        When ``step`` is given and the cost is the lowest so far, the decoder's weights are kept as the best ones.
        """
        self.decoder.eval()
        device = next(self.decoder.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        cost = self.make_cost(x_val)
        plan = latent_plan(cost, self.decoder, x_val.shape[0], generator=generator, **self.settings.as_kwargs())
        value = float(cost(plan.actions.unsqueeze(1)).mean())
        if step is not None and value < self.best_cost:
            self.best_cost, self.best_step = value, step
            self.best_state = copy.deepcopy(self.decoder.state_dict())
        return value
