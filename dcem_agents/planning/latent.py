"""Control over a learned latent action space: solve eq. (8) with (D)CEM through a decoder.

Given a decoder ``f_dec: Z -> U^H`` and a controller cost ``C(u_{1:H})`` (any function of action sequences, e.g. a
rollout of known dynamics or of a learned world model from the current state), :func:`latent_plan` solves

    ẑ = argmin_{z ∈ [-b, b]^d}  C(f_dec(z))                                                   (eq. 8)

with :func:`dcem_agents.math.dcem` and returns ``ẑ`` together with the decoded plan ``f_dec(ẑ)``. With a temperature
it is DCEM and the plan is differentiable w.r.t. the decoder's (and the cost's) parameters (alg. 2); with
``temperature=None`` it is hard CEM in the latent space. :func:`latent_cost_surface` evaluates ``C(f_dec(z))`` on a
grid of a 2-D latent box (paper fig. 3 bottom, fig. 10).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dcem_agents.math import CEMIterate, check_cem_sizes, dcem

__all__ = ["ActionCost", "LatentCEMSettings", "LatentPlan", "latent_plan", "latent_cost_surface"]

#: A controller cost: action sequences ``(B, N, H, A)`` -> costs ``(B, N)`` (lower is better), for ``B`` problems.
ActionCost = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LatentCEMSettings:
    """Hyper-parameters of the latent controller (defaults: the paper's, sect. 5.2.1); see :func:`latent_plan`.

    :param n_samples: samples per iteration.
    :param n_elites: (soft) elites per iteration.
    :param n_iters: CEM iterations.
    :param temperature: soft top-k temperature τ (DCEM); ``None`` for hard CEM.
    :param latent_bound: half-width ``b`` of the latent box ``[-b, b]^d``.
    :param init_std: initial sampling std in the latent space.
    :param grad_iters: differentiate through the last ``grad_iters`` iterations only (None: all; see
        :func:`~dcem_agents.math.dcem`): the same plan, a cheaper backward pass.
    :param execute_best: the controller acts on the best latent sample the search evaluated (lowest model cost, any
        iteration) instead of the final mean ``ẑ``, which the model never scores
        (:meth:`~dcem_agents.planning.latent_mpc.LatentDCEMController.act` only: the differentiable plan of alg. 2
        and of the PPO policy stays ``f_dec(ẑ)``).
    :param reuse_plan: the plan the controller executed at its previous call, shifted by one step (its last action
        repeated), competes with the new one under the model's cost, and the cheaper is executed (iCEM's shifted
        elites, Pinneri et al. 2020, in the action space: a latent point cannot be shifted in time). One more sequence
        is scored per call (two without ``execute_best``: the mean plan's cost is not known). The controller then keeps
        a plan between calls until its ``reset``; like ``execute_best``, this is
        :meth:`~dcem_agents.planning.latent_mpc.LatentDCEMController.act` only.
    """

    n_samples: int = 100
    n_elites: int = 10
    n_iters: int = 10
    temperature: float | None = 1.0
    latent_bound: float = 1.0
    init_std: float = 0.5
    grad_iters: int | None = None
    execute_best: bool = False
    reuse_plan: bool = False

    def __post_init__(self) -> None:
        check_cem_sizes(self.n_samples, self.n_elites, self.n_iters, where="latent planner")
        if self.latent_bound <= 0 or self.init_std <= 0:
            raise ValueError(f"latent_bound and init_std must be > 0, got {self}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (None: hard CEM), got {self.temperature}")
        if self.grad_iters is not None and not 1 <= self.grad_iters <= self.n_iters:
            raise ValueError(f"grad_iters must be in [1, n_iters={self.n_iters}] (or None: all), got {self.grad_iters}")

    def as_kwargs(self) -> dict:
        """The settings as keyword arguments of :func:`latent_plan`."""
        return dict(
            n_samples=self.n_samples, n_elites=self.n_elites, n_iters=self.n_iters, temperature=self.temperature,
            latent_bound=self.latent_bound, init_std=self.init_std, grad_iters=self.grad_iters,
        )


@dataclass(frozen=True)
class LatentPlan:
    """Result of :func:`latent_plan` for ``B`` problems.

    :param latent: the final CEM mean ``ẑ`` (B, d).
    :param actions: the decoded plan ``f_dec(ẑ)`` (B, H, A).
    """

    latent: Tensor
    actions: Tensor


def latent_plan(
    cost: ActionCost,
    decoder: nn.Module,
    n_batch: int,
    *,
    n_samples: int = 100,
    n_elites: int = 10,
    n_iters: int = 10,
    temperature: float | None = 1.0,
    latent_bound: float = 1.0,
    init_std: float = 0.5,
    normalize: bool = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[CEMIterate], None] | None = None,
    grad_iters: int | None = None,
    start: tuple[Tensor, Tensor] | None = None,
) -> LatentPlan:
    """Solve eq. (8) for ``n_batch`` problems with (D)CEM over ``z ∈ [-latent_bound, latent_bound]^d``.

    Defaults are the paper's latent controller: 100 samples, 10 elites, 10 iterations, τ = 1.

    :param cost: ``(B, N, H, A) -> (B, N)`` controller cost of decoded action sequences.
    :param decoder: maps latent points ``(..., d)`` to action sequences ``(..., H, A)``; needs ``latent_dim``.
    :param n_batch: number of independent problems ``B``.
    :param n_samples: samples per iteration.
    :param n_elites: (soft) elites per iteration.
    :param n_iters: CEM iterations.
    :param temperature: soft top-k temperature (DCEM); ``None`` for hard CEM.
    :param latent_bound: half-width ``b`` of the latent box; the search starts at its centre.
    :param init_std: initial sampling std in the latent space.
    :param normalize: standardize the costs per problem before the top-k.
    :param generator: generator for the sampling noise.
    :param noise: optional pre-drawn noise ``(n_iters, B, n_samples, d)`` (replays a plan exactly).
    :param callback: receives every :class:`~dcem_agents.math.CEMIterate` (samples are latent points).
    :param grad_iters: differentiate through the last ``grad_iters`` iterations only (None: all).
    :param start: the sampling distribution to start from, ``(mean (B, d), std (B, d))``, instead of the box centre
        and ``init_std``: the state after some iterations of an earlier call (its callback's
        :class:`~dcem_agents.math.CEMIterate` ``mean`` and ``std``). With that call's remaining noise, the last
        ``n_iters`` iterations are replayed, and differentiated with the start as a constant.
    :return: a :class:`LatentPlan`; gradients flow into the decoder and the cost when ``temperature`` is set.
    """
    latent_dim = int(decoder.latent_dim)
    ref = next(decoder.parameters())

    def objective(z: Tensor) -> Tensor:
        return cost(decoder(z))

    z_hat = dcem(
        objective,
        latent_dim,
        n_batch=n_batch,
        n_samples=n_samples,
        n_elites=n_elites,
        n_iters=n_iters,
        temperature=temperature,
        lower=-latent_bound,
        upper=latent_bound,
        init_mean=torch.zeros(latent_dim, device=ref.device, dtype=ref.dtype) if start is None else start[0],
        init_std=init_std if start is None else start[1],
        normalize=normalize,
        generator=generator,
        noise=noise,
        callback=callback,
        grad_iters=grad_iters,
    )
    return LatentPlan(z_hat, decoder(z_hat))


@torch.no_grad()
def latent_cost_surface(
    cost: ActionCost, decoder: nn.Module, n_batch: int, *, latent_bound: float = 1.0, resolution: int = 50
) -> tuple[Tensor, Tensor]:
    """Evaluate ``C(f_dec(z))`` on a ``resolution × resolution`` grid of a 2-D latent box (figs. 3 and 10).

    :param cost: ``(B, N, H, A) -> (B, N)`` controller cost for ``n_batch`` problems.
    :param decoder: a decoder with ``latent_dim == 2``.
    :param n_batch: number of problems ``B``.
    :return: ``(grid, values)``: grid points ``(R, R, 2)`` (``[i, j] = (z_1[j], z_2[i])``, as ``meshgrid(xy)``) and
        costs ``(B, R, R)``.
    """
    if int(decoder.latent_dim) != 2:
        raise ValueError(f"the cost surface needs a 2-D latent space, got latent_dim={decoder.latent_dim}")
    ref = next(decoder.parameters())
    axis = torch.linspace(-latent_bound, latent_bound, resolution, device=ref.device, dtype=ref.dtype)
    zx, zy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack((zx, zy), -1)
    points = grid.reshape(1, -1, 2).expand(n_batch, -1, -1)
    values = cost(decoder(points)).reshape(n_batch, resolution, resolution)
    return grid, values
