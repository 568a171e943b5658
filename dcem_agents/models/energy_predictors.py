"""Differentiable approximations of ``ŷ = argmin_y E_θ(y|x)`` (Amos & Yarats 2020, eq. 6, sect. 4.1 and 5.1).

Two predictors over an :class:`~dcem_agents.models.energy.EnergyNet`, both differentiable with respect to θ so that a
loss ``L(ŷ, y*)`` can be minimized by gradient steps through the inner optimizer:

- :class:`UnrolledGDPredictor`: ``T`` steps of gradient descent ``y_{t+1} = y_t - γ ∇_y E_θ(y_t|x)`` from a fixed
  ``y_0``, unrolled (second-order: the inner gradients are built with ``create_graph=True``), as in Belanger et al.
  (2017); the paper uses ``T = 10``, ``γ = 0.1``, ``y_0 = 0``.
- :class:`DCEMPredictor`: DCEM (alg. 1) with a Gaussian sampling distribution started at mean ``y_0``; the paper uses
  10 iterations, 100 samples, 10 elites, temperature 1, ``y_0 = 0``. The initial std (7) is the authors' released
  setting; it covers the target range ``x sin x ∈ [-4.9, 1.9]`` for ``x ∈ [0, 2π]``.

Both expose ``iterates(x, n)``, the ``n`` successive estimates ``(n, B, n_y)``. The ``t``-th estimate is what the
predictor returns when run for ``t`` steps (with the same noise for DCEM), so one call gives the whole
inner-iteration ablation of app. B.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dcem_agents.math.cem import CEMIterate, check_cem_sizes, dcem
from dcem_agents.models.energy import EnergyNet

__all__ = ["DCEMPredictor", "UnrolledGDPredictor"]


class UnrolledGDPredictor(nn.Module):
    """``ŷ = y_T`` with ``y_{t+1} = y_t - γ ∇_y E_θ(y_t|x)`` (sect. 4.1), differentiable in θ.

    When autograd is enabled at the call, the inner gradients are taken with ``create_graph=True``, so
    ``∂ŷ/∂θ`` goes through every step (it involves ``∂²E/∂y∂θ``). Under :func:`torch.no_grad` the steps
    still need ``∇_y E`` and compute it locally, detached, without building the outer graph.

    :param energy: the energy model.
    :param n_steps: default number of steps ``T`` (paper: 10).
    :param inner_lr: step size ``γ`` (paper: 0.1).
    :param y0: initial iterate, the same for every input (paper: 0).
    """

    def __init__(self, energy: EnergyNet, n_steps: int = 10, inner_lr: float = 0.1, y0: float = 0.0) -> None:
        super().__init__()
        if n_steps < 1 or inner_lr <= 0:
            raise ValueError(f"UnrolledGDPredictor: need n_steps >= 1 and inner_lr > 0, got {n_steps} and {inner_lr}")
        self.energy, self.n_steps, self.inner_lr, self.y0 = energy, n_steps, inner_lr, y0

    def iterates(self, x: Tensor, n_steps: int | None = None) -> Tensor:
        """The iterates ``y_1, …, y_n`` of shape ``(n, B, n_y)`` for inputs ``x`` (B, n_x)."""
        n = self.n_steps if n_steps is None else n_steps
        differentiable = torch.is_grad_enabled()
        y = torch.full((x.shape[0], self.energy.n_y), self.y0, device=x.device, dtype=x.dtype)
        out = []
        with torch.enable_grad():
            for _ in range(n):
                if differentiable:
                    y = y if y.requires_grad else y.requires_grad_()
                    (grad,) = torch.autograd.grad(self.energy(x, y).sum(), y, create_graph=True)
                    y = y - self.inner_lr * grad
                else:
                    y_leaf = y.detach().requires_grad_()
                    (grad,) = torch.autograd.grad(self.energy(x.detach(), y_leaf).sum(), y_leaf)
                    y = (y_leaf - self.inner_lr * grad).detach()
                out.append(y)
        return torch.stack(out)

    def forward(self, x: Tensor, n_steps: int | None = None) -> Tensor:
        """The prediction ``ŷ = y_T`` of shape ``(B, n_y)`` for inputs ``x`` (B, n_x)."""
        return self.iterates(x, n_steps)[-1]


class DCEMPredictor(nn.Module):
    """``ŷ`` = the final mean of DCEM on ``y ↦ E_θ(y|x)`` (alg. 1), differentiable in θ through the soft top-k.

    :param energy: the energy model.
    :param n_iters: default number of DCEM iterations (paper: 10).
    :param n_samples: samples per iteration (paper: 100).
    :param n_elites: elites per iteration (paper: 10).
    :param temperature: soft top-k temperature ``τ`` (paper: 1); ``None`` gives hard CEM (no gradient through the
        elite selection).
    :param init_std: std of the initial sampling distribution (authors' code: 7).
    :param y0: mean of the initial sampling distribution (paper: 0).
    :param normalize: standardize the energies of each row before the top-k (authors' code: yes).
    """

    def __init__(
        self,
        energy: EnergyNet,
        n_iters: int = 10,
        n_samples: int = 100,
        n_elites: int = 10,
        temperature: float | None = 1.0,
        init_std: float = 7.0,
        y0: float = 0.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        check_cem_sizes(n_samples, n_elites, n_iters, where="DCEMPredictor")
        if init_std <= 0:
            raise ValueError(f"DCEMPredictor: need init_std > 0, got {init_std}")
        self.energy = energy
        self.n_iters, self.n_samples, self.n_elites = n_iters, n_samples, n_elites
        self.temperature, self.init_std, self.y0, self.normalize = temperature, init_std, y0, normalize

    def iterates(self, x: Tensor, n_iters: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The means ``μ_2, …, μ_{n+1}`` after each iteration, shape ``(n, B, n_y)``, for inputs ``x`` (B, n_x).

        :param generator: source of the sampling noise (on ``x``'s device); the global generator if ``None``.
        """
        n = self.n_iters if n_iters is None else n_iters
        means: list[Tensor] = []

        def objective(y: Tensor) -> Tensor:  # (B, N, n_y) -> (B, N)
            return self.energy(x.unsqueeze(1), y)

        def record(it: CEMIterate) -> None:
            means.append(it.mean)

        dcem(
            objective, self.energy.n_y, n_batch=x.shape[0], n_samples=self.n_samples, n_elites=self.n_elites,
            n_iters=n, temperature=self.temperature, init_mean=torch.full((self.energy.n_y,), self.y0, dtype=x.dtype,
            device=x.device), init_std=self.init_std, normalize=self.normalize, generator=generator, callback=record,
        )
        return torch.stack(means)

    def forward(self, x: Tensor, n_iters: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The prediction ``ŷ`` (the final DCEM mean) of shape ``(B, n_y)`` for inputs ``x`` (B, n_x)."""
        return self.iterates(x, n_iters, generator)[-1]
