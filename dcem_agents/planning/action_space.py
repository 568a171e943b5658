"""Control over the full action space: solve eq. (7) with CEM over whole action sequences ``u_{1:H} ∈ U^H``.

The baseline controller of the paper (PlaNet's planner; the "expert" of sect. 5.2.1 with 1,000 samples per
iteration): CEM with a per-coordinate Gaussian over the ``H × A`` action sequence, clipped to the action box,
starting at the box centre with half the box width as std. The cost is any ``(B, N, H, A) -> (B, N)`` function, so
the same function plans on known dynamics or on a learned model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dcem_agents.math import CEMIterate, dcem

__all__ = ["action_space_plan"]


def action_space_plan(
    cost: Callable[[Tensor], Tensor],
    horizon: int,
    lower: float | Sequence[float] | Tensor,
    upper: float | Sequence[float] | Tensor,
    n_batch: int,
    *,
    action_dim: int | None = None,
    n_samples: int = 1000,
    n_elites: int = 100,
    n_iters: int = 10,
    temperature: float | None = None,
    init_mean: Tensor | None = None,
    init_std: float | Tensor | None = None,
    normalize: bool = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    callback: Callable[[CEMIterate], None] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Solve eq. (7) with CEM over the flattened ``H × A`` action sequence and return the final mean plan.

    Defaults are PlaNet's planner (1,000 samples, 100 elites, 10 iterations, hard elites).

    :param cost: ``(B, N, H, A) -> (B, N)`` controller cost; lower is better.
    :param horizon: plan length ``H``.
    :param lower: lower action bound: a scalar or ``A`` values.
    :param upper: upper action bound, like ``lower``.
    :param n_batch: number of independent problems ``B``.
    :param action_dim: ``A``; inferred from the bounds when they are sequences, else 1.
    :param n_samples: samples per iteration.
    :param n_elites: elites per iteration.
    :param n_iters: iterations.
    :param temperature: ``None`` for hard CEM (the default), or a DCEM temperature.
    :param init_mean: initial mean ``(H, A)`` or ``(B, H, A)`` (e.g. a shifted previous plan); default: box centre.
    :param init_std: initial std, scalar or shaped like ``init_mean``; default: half the box width.
    :param normalize: standardize the costs per problem before the top-k.
    :param generator: generator for the sampling noise.
    :param noise: optional pre-drawn standard normal noise ``(n_iters, n_batch, n_samples, H·A)`` used instead of
        the generator (a plan replayed exactly, or captured in a CUDA graph).
    :param callback: receives every :class:`~dcem_agents.math.CEMIterate` (samples flattened to ``H·A``).
    :param device: device of the computation (default: that of ``init_mean`` or the bounds, else CPU).
    :param dtype: dtype of the computation (default float32, or that of tensor arguments).
    :return: the final mean plan ``(B, H, A)``.
    """
    ref = init_mean if init_mean is not None else (lower if torch.is_tensor(lower) else None)
    device = torch.device(device) if device is not None else (ref.device if ref is not None else torch.device("cpu"))
    dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
    lo = torch.as_tensor(lower, device=device, dtype=dtype).reshape(-1)
    hi = torch.as_tensor(upper, device=device, dtype=dtype).reshape(-1)
    if action_dim is None:
        action_dim = max(lo.numel(), hi.numel())
    lo, hi = lo.expand(action_dim), hi.expand(action_dim)
    dim = horizon * action_dim

    def objective(flat: Tensor) -> Tensor:
        return cost(flat.unflatten(-1, (horizon, action_dim)))

    def flatten(x: Tensor | float | None) -> Tensor | float | None:
        if not torch.is_tensor(x):
            return x
        x = x.to(device=device, dtype=dtype)
        return x.flatten(-2) if x.dim() >= 2 else x.repeat(horizon) if x.numel() == action_dim else x

    plan = dcem(
        objective,
        dim,
        n_batch=n_batch,
        n_samples=n_samples,
        n_elites=n_elites,
        n_iters=n_iters,
        temperature=temperature,
        lower=lo.repeat(horizon),
        upper=hi.repeat(horizon),
        init_mean=flatten(init_mean),
        init_std=flatten(init_std),
        normalize=normalize,
        generator=generator,
        noise=noise,
        callback=callback,
        device=device,
        dtype=dtype,
    )
    return plan.unflatten(-1, (horizon, action_dim))
